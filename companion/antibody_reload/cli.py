"""`python -m antibody_reload SUBCOMMAND --state-dir D ...`: what Antibody runs through
pods/exec. Each run prints ONE JSON line on stdout (the controller records it) and, on
failure, a human message on stderr.

Exit codes: 0 ok, 1 signal refused, 2 usage, 3 env file not synced, 4 timeout (names what is
missing), 5 no live worker registered, 6 master not found / ambiguous (hup).
"""
import argparse
import json
import os
import re
import signal
import sys
import time

from . import envfile, state

EXIT_SIGNAL, EXIT_USAGE, EXIT_NOT_SYNCED, EXIT_TIMEOUT, EXIT_NO_WORKER, EXIT_NO_MASTER = 1, 2, 3, 4, 5, 6
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
POLL_S = 0.02


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _emit(obj, code, message=None):
    print(json.dumps(obj, sort_keys=True), flush=True)
    if message:
        print("antibody_reload: " + message, file=sys.stderr, flush=True)
    return code


def _parse_expect(items):
    expected = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not _HEX64.match(value.lower()):
            raise UsageError("--expect-env %r: want KEY=<sha256 hex of the value>" % item)
        expected[key] = value.lower()
    return expected


def _mismatch(actual_digests, expected):
    return {k: actual_digests.get(k) for k, v in expected.items() if actual_digests.get(k) != v}


def _wait_env_synced(env_file, expected, deadline):
    """Step (a): the kubelet refreshes a mounted ConfigMap late; wait for the new content."""
    while True:
        values = envfile.read(env_file)
        missing = _mismatch(envfile.digests(values or {}), expected)
        if not missing:
            return None
        if time.monotonic() >= deadline:
            return missing
        time.sleep(POLL_S)


def _worker_view(w):
    return {"pid": w["pid"], "ppid": w.get("ppid"), "generation": w.get("generation"),
            "env": w.get("env") or {}, "retiring": bool(w.get("retiring"))}


def _common(sub):
    sub.add_argument("--state-dir", default=None)
    sub.add_argument("--expect-env", action="append", default=[], metavar="KEY=SHA256HEX")
    sub.add_argument("--env-file", default=None)


def _parser():
    parser = _Parser(prog="python -m antibody_reload")
    subs = parser.add_subparsers(dest="command")
    reload_ = subs.add_parser("reload", help="apply the env file in place in every worker")
    _common(reload_)
    reload_.add_argument("--generation", required=True)
    reload_.add_argument("--timeout", type=float, default=5.0)
    hup = subs.add_parser("hup", help="replace the workers (SIGHUP to their gunicorn master)")
    _common(hup)
    hup.add_argument("--timeout", type=float, default=10.0)
    status = subs.add_parser("status", help="list the live workers")
    status.add_argument("--state-dir", default=None)
    for sub in (reload_, hup, status):
        sub.error = parser.error
    return parser


def _env_prelude(args, started, deadline):
    """Validate --expect-env/--env-file and wait for the sync; (expected, failure code)."""
    expected = _parse_expect(args.expect_env)
    env_file = args.env_file or os.environ.get("ANTIBODY_ENV_FILE")
    if expected and not env_file:
        raise UsageError("--expect-env needs --env-file (or ANTIBODY_ENV_FILE)")
    if expected:
        missing = _wait_env_synced(env_file, expected, deadline)
        if missing is not None:
            return expected, _emit(
                {"error": "env_file_not_synced", "env_file": env_file, "mismatch": missing,
                 "waited_ms": _ms(started)},
                EXIT_NOT_SYNCED,
                "env file not synced: %s does not yet hold %s" % (env_file, ", ".join(sorted(missing))))
    return expected, None


def _ms(started):
    return int((time.monotonic() - started) * 1000)


def cmd_reload(args):
    started = time.monotonic()
    deadline = started + args.timeout
    root = state.state_dir(args.state_dir)
    expected, failed = _env_prelude(args, started, deadline)
    if failed is not None:
        return failed
    if not state.live_workers(root):
        return _emit({"error": "no_worker", "state_dir": root}, EXIT_NO_WORKER,
                     "no live worker registered in %s" % root)
    if state.read_generation(root) != args.generation:
        state.write_json_atomic(state.request_path(root), {"generation": args.generation})
    while True:
        workers = state.live_workers(root)
        lagging = [w for w in workers
                   if w.get("generation") != args.generation
                   or _mismatch(w.get("env") or {}, expected)]
        if workers and not lagging:
            return _emit({"mode": "in_place", "generation": args.generation,
                          "workers": [{"pid": w["pid"], "env": w.get("env") or {}} for w in workers],
                          "waited_ms": _ms(started)}, 0)
        if time.monotonic() >= deadline:
            if not workers:
                return _emit({"error": "no_worker", "state_dir": root}, EXIT_NO_WORKER,
                             "every registered worker exited while waiting")
            return _emit({"error": "timeout", "generation": args.generation,
                          "not_acked": [_worker_view(w) for w in lagging],
                          "waited_ms": _ms(started)}, EXIT_TIMEOUT,
                         "workers %s did not apply generation %s within %.1fs"
                         % (",".join(str(w["pid"]) for w in lagging), args.generation, args.timeout))
        time.sleep(POLL_S)


def cmd_hup(args):
    started = time.monotonic()
    deadline = started + args.timeout
    root = state.state_dir(args.state_dir)
    expected, failed = _env_prelude(args, started, deadline)
    if failed is not None:
        return failed
    workers = state.live_workers(root)
    parents = sorted({w.get("ppid") for w in workers})
    if len(parents) != 1 or not isinstance(parents[0], int) or parents[0] <= 1 \
            or not state.pid_alive(parents[0]):
        return _emit({"error": "no_master", "parents": parents, "state_dir": root}, EXIT_NO_MASTER,
                     "cannot find one gunicorn master from the registrations in %s (parents: %s)"
                     % (root, parents))
    master = parents[0]
    old = sorted(w["pid"] for w in workers)
    try:
        os.kill(master, signal.SIGHUP)
    except OSError as exc:
        return _emit({"error": "signal_failed", "master": master, "reason": str(exc)}, EXIT_SIGNAL,
                     "SIGHUP to master %d failed: %s" % (master, exc))
    while True:
        workers = state.live_workers(root)
        remaining = [w["pid"] for w in workers if w["pid"] in old]
        new = [w for w in workers if w["pid"] not in old and w.get("ppid") == master]
        ready = [w for w in new if w.get("ready") and not _mismatch(w.get("env") or {}, expected)]
        if not remaining and ready and len(ready) == len(new):
            return _emit({"mode": "hup", "master": master, "old": old,
                          "new": sorted(w["pid"] for w in ready), "waited_ms": _ms(started)}, 0)
        if time.monotonic() >= deadline:
            missing = []
            if remaining:
                missing.append("old workers still running: %s" % remaining)
            if not ready or len(ready) != len(new):
                missing.append("new workers ready with the expected env: %s of %s"
                               % ([w["pid"] for w in ready], [w["pid"] for w in new]))
            return _emit({"error": "timeout", "master": master, "old": old,
                          "old_remaining": remaining, "new": [_worker_view(w) for w in new],
                          "waited_ms": _ms(started)}, EXIT_TIMEOUT,
                         "; ".join(missing))
        time.sleep(POLL_S)


def cmd_status(args):
    root = state.state_dir(args.state_dir)
    workers = state.live_workers(root)
    return _emit({"workers": workers}, 0 if workers else EXIT_NO_WORKER,
                 None if workers else "no live worker registered in %s" % root)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a subcommand is required: reload, hup or status")
        if getattr(args, "timeout", 1) is not None and getattr(args, "timeout", 1) <= 0:
            raise UsageError("--timeout must be > 0")
        return {"reload": cmd_reload, "hup": cmd_hup, "status": cmd_status}[args.command](args)
    except UsageError as exc:
        return _emit({"error": "usage", "reason": str(exc)}, EXIT_USAGE, str(exc))


if __name__ == "__main__":
    sys.exit(main())
