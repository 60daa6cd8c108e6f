"""The in-app side: one Companion per worker process.

    from antibody_reload import Companion
    companion = Companion(app, socketio=socketio)

- registers the worker in STATE_DIR/workers/<pid>.json (generation, env digests, ready);
- applies the env file in place when STATE_DIR/request.json names a new generation
  (os.environ and app.config, then the on_reload hooks), and acknowledges it;
- when gunicorn retires the worker (HUP of the master), hands its WebSocket clients over to
  the newer worker: closes the clients' transports at once, spread over
  ANTIBODY_RETIRE_SPREAD_MS, so they reconnect (a Socket.IO/Engine.IO "close" packet would
  make standard clients give up) and the worker exits promptly instead of at gunicorn's
  --timeout; it stays subscribed to the queue until the newer worker is, then hands its event
  buffer over (STATE_DIR/handover/<pid>.json);
- keeps a few seconds of broadcast events from the message queue and replays the ones a
  reconnecting client missed, including those only the retired worker received (replay.py).
"""
import atexit
import logging
import os
import random
import signal
import sys
import threading
import time

from . import envfile, gunicorn_worker, replay, state

logger = logging.getLogger("antibody_reload")


def _env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Companion:
    def __init__(self, app, socketio=None, state_dir=None, env_file=None, poll_interval=0.075,
                 retire_spread_ms=None, retire_wait_s=None, replay_field="seq",
                 replay_auth_key="last_seq", replay_seconds=10.0, watch_env_file=None):
        self.app = app
        self.socketio = socketio
        self.state_dir = state.state_dir(state_dir)
        self.env_file = env_file or os.environ.get("ANTIBODY_ENV_FILE") or None
        self.poll_interval = poll_interval
        self.retire_spread_ms = (retire_spread_ms if retire_spread_ms is not None
                                 else _env_float("ANTIBODY_RETIRE_SPREAD_MS", 500.0))
        self.retire_wait_s = (retire_wait_s if retire_wait_s is not None
                              else _env_float("ANTIBODY_RETIRE_WAIT_S", 5.0))
        # ANTIBODY_RETIRE=0: leave retired workers to gunicorn alone (the baseline behaviour).
        self.retire = os.environ.get("ANTIBODY_RETIRE", "1") not in ("0", "false", "off")
        self.replay_field = os.environ.get("ANTIBODY_REPLAY_FIELD", replay_field)
        self.replay_auth_key = replay_auth_key
        self.ring = replay.EventRing(seconds=replay_seconds)
        if watch_env_file is None:
            watch_env_file = os.environ.get("ANTIBODY_WATCH_ENV_FILE", "") in ("1", "true")
        self.watch_env_file = watch_env_file
        self.generation = None
        self.env_digests = {}
        self.applied_at = None
        self.error = None
        self.started_at = None
        self.retiring = False
        self._hooks = []
        self._lock = threading.Lock()
        self._retire_event = threading.Event()
        self._handover_done = threading.Event()
        self._started = False
        self._pid = None
        self._last_file_digest = None
        if gunicorn_worker.in_preload_master():
            # Imported by gunicorn's master (--preload): threads do not survive fork, start
            # in each worker instead.
            os.register_at_fork(after_in_child=self._start)
        else:
            self._start()

    # -- public API -------------------------------------------------------------------

    def on_reload(self, fn):
        """Register fn(changed: dict KEY->VALUE, generation) called after an in-place reload."""
        self._hooks.append(fn)
        return fn

    # -- start ------------------------------------------------------------------------

    def _start(self):
        if self._started and self._pid == os.getpid():
            return
        self._started = True
        self._pid = os.getpid()
        self._retire_event = threading.Event()  # fresh in a forked worker (--preload)
        self._handover_done = threading.Event()
        self._chain_sigterm()
        threading.Thread(target=self._boot, name="antibody-reload", daemon=True).start()

    def _chain_sigterm(self):
        """Run the companion's retirement right after gunicorn's own SIGTERM handler."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        worker = gunicorn_worker.current_worker()
        if worker is None:
            return  # not in a gunicorn worker (yet): the boot thread watches `alive`

        def handler(signum, frame):
            if callable(previous):
                previous(signum, frame)
            if self.retire:
                stop_accepting(worker)
            self._retire_event.set()

        signal.signal(signal.SIGTERM, handler)

    def _boot(self):
        try:
            worker = None
            if any(name.startswith("gunicorn") for name in sys.modules):
                deadline = time.monotonic() + 60
                while worker is None and time.monotonic() < deadline:
                    worker = gunicorn_worker.current_worker() or self._chained_worker()
                    if worker is None:
                        time.sleep(0.02)
            os.makedirs(state.workers_dir(self.state_dir), exist_ok=True)
            self.started_at = time.time()
            generation = state.read_generation(self.state_dir)
            self._apply_env_file(generation, call_hooks=False)
            self._init_socketio()
            self._register()
            atexit.register(self._at_exit)
            if worker is not None and self.retire:
                threading.Thread(target=self._watch_retirement, args=(worker,),
                                 name="antibody-reload-retire", daemon=True).start()
            self._poll_requests()
        except Exception:  # never take the app down
            logger.exception("antibody_reload: companion stopped")

    def _chained_worker(self):
        # After _chain_sigterm the handler is ours; gunicorn's is its `previous` cell.
        handler = signal.getsignal(signal.SIGTERM)
        for cell in getattr(handler, "__closure__", None) or ():
            worker = getattr(cell.cell_contents, "__self__", None)
            if worker is not None and hasattr(worker, "alive"):
                return worker
        return None

    def _init_socketio(self):
        """Subscribe to the message queue now, not at the first client (so events published
        while clients move here are already received and buffered for replay)."""
        if self.socketio is None:
            return
        server = getattr(self.socketio, "server", None)
        if server is None:
            return
        replay.install(server, self.ring, self.replay_field, self.replay_auth_key, logger,
                       self._handed_over_messages)
        if not getattr(server, "manager_initialized", True):
            server.manager_initialized = True
            server.manager.initialize()
        if not hasattr(server.manager, "pubsub") or getattr(server.manager, "write_only", False):
            return  # not a Redis queue: nothing to wait for
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pubsub = server.manager.pubsub
            if pubsub is not None and pubsub.subscribed:
                return
            time.sleep(0.01)
        logger.warning("antibody_reload: not subscribed to the message queue after 5s")

    # -- registration -----------------------------------------------------------------

    def _worker_path(self):
        return os.path.join(state.workers_dir(self.state_dir), "%d.json" % os.getpid())

    def _register(self):
        with self._lock:
            info = {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "started_at": self.started_at,
                "generation": self.generation,
                "applied_at": self.applied_at,
                "env": dict(self.env_digests),
                "ready": True,
                "retiring": self.retiring,
                "error": self.error,
            }
            try:
                os.makedirs(state.workers_dir(self.state_dir), exist_ok=True)
                state.write_json_atomic(self._worker_path(), info)
            except OSError as exc:  # keep serving; the CLI will report the missing ack
                logger.error("antibody_reload: cannot register in %s: %s", self.state_dir, exc)

    def _unregister(self):
        if self._pid != os.getpid():
            return
        try:
            os.unlink(self._worker_path())
        except OSError:
            pass

    # -- in-place reload --------------------------------------------------------------

    def _apply_env_file(self, generation, call_hooks=True):
        values = envfile.read(self.env_file) if self.env_file else {}
        if values is None:
            self.error = "env file %s not readable" % self.env_file
            values = {}
        else:
            self.error = None
        changed = {k: v for k, v in values.items() if os.environ.get(k) != v}
        for key, value in values.items():
            os.environ[key] = value
            if self.app is not None:
                self.app.config[key] = value
        self.env_digests = envfile.digests(values)
        self.generation = generation
        self.applied_at = time.time()
        if call_hooks:
            for hook in self._hooks:
                try:
                    hook(changed, generation)
                except Exception as exc:
                    logger.exception("antibody_reload: on_reload hook failed")
                    self.error = "on_reload hook failed: %s" % exc

    def _file_digest(self):
        try:
            with open(self.env_file, "rb") as f:
                return envfile.digest(f.read().decode("utf-8", "replace"))
        except (OSError, TypeError):
            return None

    def _poll_requests(self):
        if self.watch_env_file:
            self._last_file_digest = self._file_digest()
        last_clean = 0.0
        while True:
            time.sleep(self.poll_interval)
            if time.monotonic() - last_clean > 10:
                last_clean = time.monotonic()
                self._clean_handovers()
            generation = state.read_generation(self.state_dir)
            file_changed = False
            if self.watch_env_file:
                current = self._file_digest()
                file_changed = current != self._last_file_digest
                self._last_file_digest = current
            if (generation is not None and generation != self.generation) or file_changed:
                self._apply_env_file(generation if generation is not None else self.generation)
                self._register()
            elif not os.path.exists(self._worker_path()):
                self._register()  # someone cleaned the directory: register again

    # -- retirement -------------------------------------------------------------------

    def _watch_retirement(self, worker):
        while not self._retire_event.wait(0.05):
            if not getattr(worker, "alive", True):
                break
        self.retiring = True
        stop_accepting(worker)
        self._register()
        # Clients go now: their own reconnect back-off (python-socketio and socket.io-client:
        # 1 s +- 0.5 s) overlaps the new worker's boot; until it accepts, their connections
        # wait in the listen backlog the master keeps open.
        self._close_clients_spread()
        threading.Thread(target=self._close_late_clients, name="antibody-reload-sweep",
                         daemon=True).start()
        # The events broadcast between a client's close and the new worker's subscription
        # reach only this worker: stay subscribed until the successor is, then hand the buffer
        # over (the worker's exit waits for this, see _at_exit).
        try:
            if self._wait_for_successor():
                time.sleep(0.1)  # what was in flight to the successor's subscription
            self._dump_handover()
        finally:
            self._handover_done.set()

    def _at_exit(self):
        if self.retiring and self._pid == os.getpid():
            self._handover_done.wait(self.retire_wait_s + 1.0)
        self._unregister()

    def _handover_dir(self):
        return os.path.join(self.state_dir, "handover")

    def _dump_handover(self):
        path = os.path.join(self._handover_dir(), "%d.json" % os.getpid())
        try:
            os.makedirs(self._handover_dir(), exist_ok=True)
            state.write_json_atomic(path, {"pid": os.getpid(), "ppid": os.getppid(),
                                           "dumped_at": time.time(),
                                           "messages": self.ring.messages()})
        except (OSError, TypeError, ValueError) as exc:
            logger.error("antibody_reload: cannot hand events over: %s", exc)

    def _handed_over_messages(self):
        """Buffered events of the workers this one replaces (same master, retiring): waits,
        bounded, for a retiring worker that is still alive to write them."""
        me, parent = os.getpid(), os.getppid()
        deadline = time.monotonic() + self.retire_wait_s + 0.5
        while True:
            pending = [w["pid"] for w in state.live_workers(self.state_dir)
                       if w.get("retiring") and w.get("ppid") == parent and w["pid"] != me]
            dumps = {}
            try:
                names = os.listdir(self._handover_dir())
            except OSError:
                names = []
            for name in names:
                path = os.path.join(self._handover_dir(), name)
                dump = state.read_json(path) if name.endswith(".json") else None
                if (isinstance(dump, dict) and dump.get("ppid") == parent
                        and time.time() - (dump.get("dumped_at") or 0) < self.ring.seconds):
                    dumps[dump.get("pid")] = dump.get("messages") or []
            if all(pid in dumps for pid in pending) or time.monotonic() >= deadline:
                return [m for messages in dumps.values() for m in messages if isinstance(m, dict)]
            time.sleep(0.02)

    def _clean_handovers(self):
        try:
            names = os.listdir(self._handover_dir())
        except OSError:
            return
        for name in names:
            path = os.path.join(self._handover_dir(), name)
            try:
                if time.time() - os.path.getmtime(path) > 60:
                    os.unlink(path)
            except OSError:
                pass

    def _close_late_clients(self):
        """Safety net until exit: a client that still reached this worker is sent on."""
        eio = getattr(getattr(self.socketio, "server", None), "eio", None)
        while eio is not None:
            time.sleep(0.05)
            for sid, sock in list(eio.sockets.items()):
                close_transport(eio, sid, sock)

    def _wait_for_successor(self):
        deadline = time.monotonic() + self.retire_wait_s
        me, parent = os.getpid(), os.getppid()
        while time.monotonic() < deadline:
            for other in state.live_workers(self.state_dir):
                if (other.get("pid") != me and other.get("ppid") == parent
                        and other.get("ready") and not other.get("retiring")
                        and (other.get("started_at") or 0) >= (self.started_at or 0)):
                    return True
            if not state.younger_siblings(me, parent):
                return False  # the server is stopping, not reloading: nobody to wait for
            time.sleep(0.02)
        logger.warning("antibody_reload: no newer worker within %.1fs", self.retire_wait_s)
        return False

    def _close_clients_spread(self):
        server = getattr(self.socketio, "server", None)
        eio = getattr(server, "eio", None)
        if eio is None:
            return
        sockets = list(eio.sockets.items())
        random.shuffle(sockets)
        spread = max(self.retire_spread_ms, 0.0) / 1000.0
        start = time.monotonic()
        count = len(sockets)
        for index, (sid, sock) in enumerate(sockets):
            # Slot i of n, jittered inside its slot: spread evenly, never all at once.
            at = start + spread * (index + random.random()) / max(count, 1)
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            close_transport(eio, sid, sock)


def stop_accepting(worker):
    """Take gunicorn's listeners out of the retiring worker's poller: gthread keeps polling
    them for up to a second after SIGTERM, and a client reconnecting then would land on the
    worker that is leaving. The master keeps the listening socket open: new connections
    wait in its backlog for the new worker."""
    poller = getattr(worker, "poller", None)
    for sock in getattr(worker, "sockets", None) or ():
        try:
            poller.unregister(sock)
        except (AttributeError, KeyError, ValueError, OSError):
            pass


def close_transport(eio, sid, sock):
    """Close a client's transport without an Engine.IO CLOSE packet: the client sees a
    transport error and reconnects (after a CLOSE packet it would stay disconnected)."""
    try:
        sock.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
    except Exception:
        logger.exception("antibody_reload: closing client %s failed", sid)
    eio.sockets.pop(sid, None)
