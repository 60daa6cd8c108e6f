"""Finding the gunicorn worker this process runs in, without importing gunicorn.

A gunicorn worker installs its bound method `handle_exit` as the SIGTERM handler before it
runs the app (and, with --preload, right after the fork); the handler's `__self__` is the
worker, whose `alive` flag gunicorn clears when it is told to stop (SIGTERM on HUP of the
master, max_requests, ...).
"""
import signal
import sys


def current_worker():
    handler = signal.getsignal(signal.SIGTERM)
    worker = getattr(handler, "__self__", None)
    if worker is None:
        return None
    module = type(worker).__module__ or ""
    if module.startswith("gunicorn.workers") and hasattr(worker, "alive"):
        return worker
    return None


def in_preload_master():
    """True when imported by gunicorn's master before it forks workers (--preload)."""
    return "gunicorn.arbiter" in sys.modules and current_worker() is None
