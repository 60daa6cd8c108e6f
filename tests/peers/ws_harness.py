"""Real-peer WebSocket harness for issue 14: what a reload does to live Socket.IO clients.

Starts (all on loopback, all cleaned up at the end):
- redis-server on a free port (the Socket.IO message queue);
- gunicorn (gthread, 1 worker, --threads >= clients + 16) serving ws_app.py with Antibody's
  reload companion, as uid 65534 when run as root (kwok's exec runs as that uid and must be
  able to signal the master);
- N python-socketio clients on the WebSocket transport only (default 50);
- a broadcaster publishing `tick` {seq} 20 times a second through the Redis queue.

Protocol (driven by a test):
  stdout  {"ready": true, "state_dir":..., "env_file":..., "master_pid":..., "port":...}
  stdin   GO <epoch_ms>          (t0: the alert time)
  stdin   <expected value>       (the new VAEL_MODE value the fix brings)
  stdout  ONE JSON result line after at most --window seconds.

Standalone baselines without Antibody: `--bare inplace|hup|hup-retire|plain-hup`:
  inplace     write the env file, `python -m antibody_reload reload --generation G --expect-env`
  hup         write the env file, `python -m antibody_reload hup --expect-env` (companion
              hands clients over)
  hup-retire  write the env file, bare `kill -HUP <master>`; the companion hands clients over
  plain-hup   write the env file, bare `kill -HUP <master>` with ANTIBODY_RETIRE=0: gunicorn
              alone (the old worker keeps its clients until gunicorn's --timeout kills it)

Driven by a test, the harness does not touch the env file after start (VAEL_MODE=old): the
test writes it, as the kubelet's ConfigMap sync would. Result fields: effect_ms (earliest
moment every live worker had the expected value; effect_seen_ms the latest), old_workers_gone_ms,
all_on_new_config_ms, new_config_p99_ms, disconnects (+ first/last ms), max_reconnect_ms,
events_published, events_lost, per_client[...]; all times in ms from t0.
"""
import argparse
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis
import socketio
from flask_socketio import SocketIO

from antibody_reload import state as reload_state
from antibody_reload.client import ReplayTracker

HERE = os.path.dirname(os.path.abspath(__file__))
NOBODY = 65534
PR_SET_PDEATHSIG = 1
KEY = "VAEL_MODE"


def now_ms():
    return time.time() * 1000.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parent_death_signal(sig):
    """preexec_fn: the kernel sends `sig` to the child if this harness dies (killed outright,
    its cleanup never runs), so nothing it started outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec():
        libc.prctl(PR_SET_PDEATHSIG, int(sig))

    return preexec


def log(msg):
    print("[ws_harness] " + msg, file=sys.stderr, flush=True)


class Probe:
    """One browser stand-in: a python-socketio client that records what happens to it."""

    def __init__(self, index, url, expected_ref, lock, replay=True):
        self.index = index
        self.replay = replay
        self.url = url
        self.expected_ref = expected_ref  # [value or None, t0_ms]
        self.lock = lock
        self.tracker = ReplayTracker(field="seq", auth_key="last_seq")
        self.client = socketio.Client(reconnection=True)
        self.connected = False
        self.pid = None
        self.first_seq = None
        self.seqs = set()
        self.disconnect_at = []  # epoch ms
        self.reconnect_ms = []
        self.new_config_at = None
        self.pids = []
        self.ticks_since_connect = 0
        c = self.client
        c.on("connect", self._on_connect)
        c.on("disconnect", self._on_disconnect)
        c.on("hello", self._on_hello)
        c.on("config", self._on_config)
        c.on("tick", self.tracker.dedup(self._on_tick))

    def start(self):
        self.client.connect(self.url, transports=["websocket"],
                            auth=self.tracker.auth if self.replay else None, wait_timeout=15)

    def _on_connect(self):
        with self.lock:
            self.connected = True
            self.ticks_since_connect = 0
            if self.disconnect_at and len(self.reconnect_ms) < len(self.disconnect_at):
                self.reconnect_ms.append(now_ms() - self.disconnect_at[-1])

    def _on_disconnect(self, reason=None):
        with self.lock:
            self.connected = False
            self.disconnect_at.append(now_ms())

    def _seen_value(self, value):
        expected, _ = self.expected_ref
        if expected is not None and value == expected and self.new_config_at is None:
            self.new_config_at = now_ms()

    def _on_hello(self, data):
        with self.lock:
            self.pid = data.get("pid")
            self.pids.append(self.pid)
            self._seen_value(data.get("value"))

    def _on_config(self, data):
        with self.lock:
            self._seen_value(data.get("value"))

    def _on_tick(self, data):
        with self.lock:
            seq = data.get("seq")
            if self.first_seq is None:
                self.first_seq = seq
            self.seqs.add(seq)
            self.ticks_since_connect += 1


class Broadcaster(threading.Thread):
    def __init__(self, queue_url, rate):
        super().__init__(name="broadcaster", daemon=True)
        self.sio = SocketIO(message_queue=queue_url, channel="flask-socketio")
        self.interval = 1.0 / rate
        self.seq = 0
        self.stop_event = threading.Event()

    def run(self):
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            self.seq += 1
            self.sio.emit("tick", {"seq": self.seq, "t": now_ms()}, namespace="/")
            next_at += self.interval
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


class Harness:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="ws-harness-")
        os.chmod(self.tmp, 0o755)
        self.state_dir = os.path.join(self.tmp, "state")
        self.env_file = os.path.join(self.tmp, "app.env")
        self.procs = []
        self.redis = None
        self.gunicorn = None
        self.probes = []
        self.broadcaster = None
        self.lock = threading.Lock()
        self.expected_ref = [None, None]
        self.started_workers = set()

    # -- start ------------------------------------------------------------------------

    def write_env(self, value):
        tmp = self.env_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("# written by ws_harness\n%s=%s\n" % (KEY, value))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.env_file)

    def start(self):
        os.makedirs(reload_state.workers_dir(self.state_dir))
        for d in (self.state_dir, reload_state.workers_dir(self.state_dir)):
            os.chmod(d, 0o777)
        self.write_env("old")
        redis_port = free_port()
        # --pdeathsig: if this harness is killed outright (its finally never runs), the kernel
        # stops what it started.
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=parent_death_signal(signal.SIGTERM))
        self.queue_url = "redis://127.0.0.1:%d/0" % redis_port
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.queue_url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

        self.port = free_port()
        threads = self.args.threads or self.args.clients + 16
        bindir = os.path.dirname(sys.executable)
        argv = [os.path.join(bindir, "gunicorn"), "--bind", "127.0.0.1:%d" % self.port,
                "--worker-class", self.args.worker_class, "--threads", str(threads), "--workers",
                str(self.args.workers), "--graceful-timeout", str(self.args.graceful_timeout),
                "--timeout", str(self.args.worker_timeout),
                "--pid", os.path.join(self.state_dir, "gunicorn.pid"),
                "--chdir", HERE, "--log-level", "warning", "ws_app:app"]
        if self.args.preload:
            argv.insert(-1, "--preload")
        # As uid 65534 when root; the parent-death signal is set after the uid change (a
        # credential change clears it). SIGINT: gunicorn's quick shutdown, workers go too.
        drop = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if os.geteuid() == 0 else {}
        env = dict(os.environ, WS_APP_MESSAGE_QUEUE=self.queue_url,
                   ANTIBODY_STATE_DIR=self.state_dir, ANTIBODY_ENV_FILE=self.env_file,
                   ANTIBODY_RETIRE_SPREAD_MS=str(self.args.spread_ms),
                   ANTIBODY_RETIRE="0" if self.args.bare == "plain-hup" or self.args.no_retire else "1",
                   WS_APP_ASYNC_MODE="gevent" if self.args.worker_class == "gevent" else "threading",
                   PYTHONUNBUFFERED="1")
        self.gunicorn_log = open(os.path.join(self.tmp, "gunicorn.log"), "w")
        self.gunicorn = subprocess.Popen(argv, env=env, stdout=self.gunicorn_log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=parent_death_signal(signal.SIGINT), **drop)
        self.master_pid = self.gunicorn.pid
        self.wait_workers(self.args.workers, 30)

        url = "http://127.0.0.1:%d" % self.port
        self.probes = [Probe(i, url, self.expected_ref, self.lock, not self.args.no_replay) for i in range(self.args.clients)]
        for probe in self.probes:
            try:
                probe.start()
            except socketio.exceptions.ConnectionError as exc:
                log("client %d did not connect: %s" % (probe.index, exc))
        self.broadcaster = Broadcaster(self.queue_url, self.args.rate)
        self.broadcaster.start()
        deadline = time.monotonic() + self.args.ready_timeout
        while True:
            with self.lock:
                flowing = sum(p.connected and p.ticks_since_connect >= 2 for p in self.probes)
            if flowing == len(self.probes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d clients connected with events flowing after %ss"
                                   % (flowing, len(self.probes), self.args.ready_timeout))
            time.sleep(0.05)

    def wait_workers(self, count, timeout):
        deadline = time.monotonic() + timeout
        while True:
            workers = reload_state.live_workers(self.state_dir)
            if len(workers) >= count and all(w.get("ready") for w in workers):
                self.started_workers.update(w["pid"] for w in workers)
                return workers
            if self.gunicorn.poll() is not None:
                raise RuntimeError("gunicorn exited: see %s" % self.gunicorn_log.name)
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn workers not registered after %ss" % timeout)
            time.sleep(0.05)

    # -- the action -------------------------------------------------------------------

    def trigger_bare(self, expected):
        """Baselines without Antibody: the harness plays the controller."""
        mode = self.args.bare
        self.write_env(expected)
        digest = hashlib.sha256(expected.encode()).hexdigest()
        cli = [sys.executable, "-m", "antibody_reload"]
        common = ["--state-dir", self.state_dir, "--env-file", self.env_file,
                  "--expect-env", "%s=%s" % (KEY, digest)]
        if mode == "inplace":
            argv = cli + ["reload", "--generation", "g-%d" % int(now_ms())] + common
        elif mode == "hup":
            argv = cli + ["hup"] + common
        else:
            os.kill(self.master_pid, signal.SIGHUP)
            return {"argv": ["kill", "-HUP", str(self.master_pid)], "rc": 0,
                    "done_ms": now_ms() - self.expected_ref[1]}
        shown = argv[1:]
        if os.geteuid() == 0:  # as kwok's exec would run it
            argv = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"] + argv
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out = done.stdout.strip().splitlines()
        return {"argv": shown, "rc": done.returncode,
                "stdout": json.loads(out[-1]) if out else None, "stderr": done.stderr.strip(),
                "done_ms": now_ms() - self.expected_ref[1]}

    def watch(self, expected, t0):
        """Record until every client is on the new config and settled, or the window ends."""
        digest = hashlib.sha256(expected.encode()).hexdigest()
        window_end = time.monotonic() + self.args.window
        effect_ms = effect_seen_ms = None
        last_mismatch_ms = 0.0
        old_gone_ms = None
        old = set(self.started_workers)
        settled_since = None
        while time.monotonic() < window_end:
            workers = reload_state.live_workers(self.state_dir)
            self.started_workers.update(w["pid"] for w in workers)
            matched = bool(workers) and all(
                (w.get("env") or {}).get(KEY) == digest for w in workers)
            if effect_ms is None and matched:
                # The effect happened after the last look that still saw a worker without it
                # and not before the last worker stamped it (its own clock): the later of the
                # two is the earliest moment it can have been true; `effect_seen_ms` the latest.
                stamps = [w.get("applied_at") or 0 for w in workers]
                effect_seen_ms = now_ms() - t0
                effect_ms = min(effect_seen_ms, max(max(stamps) * 1000.0 - t0, last_mismatch_ms))
            elif not matched:
                last_mismatch_ms = now_ms() - t0
            if old_gone_ms is None and not any(w["pid"] in old for w in workers):
                old_gone_ms = now_ms() - t0
            with self.lock:
                done = all(p.connected and p.new_config_at is not None for p in self.probes)
            if done and effect_ms is not None:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= self.args.settle:
                    break
            else:
                settled_since = None
            time.sleep(0.02)
        return effect_ms, effect_seen_ms, old_gone_ms

    def result(self, expected, t0, effect_ms, effect_seen_ms, old_gone_ms, action):
        # Let in-flight events land, then stop publishing and count what each client missed.
        time.sleep(0.3)
        self.broadcaster.stop_event.set()
        self.broadcaster.join(2)
        last = self.broadcaster.seq
        time.sleep(0.5)
        per_client = []
        with self.lock:
            for p in self.probes:
                after_t0 = [d for d in p.disconnect_at if d >= t0]
                lost = 0
                if p.first_seq is not None:
                    lost = sum(1 for s in range(p.first_seq, last + 1) if s not in p.seqs)
                per_client.append({
                    "client": p.index,
                    "disconnects": len(after_t0),
                    "disconnect_ms": [round(d - t0) for d in after_t0],
                    "reconnect_ms": [round(r) for r in p.reconnect_ms],
                    "new_config_ms": None if p.new_config_at is None else round(p.new_config_at - t0),
                    "pid": p.pid,
                    "lost": lost,
                })
        config_times = [c["new_config_ms"] for c in per_client]
        all_new = None if any(t is None for t in config_times) else max(config_times)
        reconnects = [r for c in per_client for r in c["reconnect_ms"]]
        disconnect_times = sorted(d for c in per_client for d in c["disconnect_ms"])
        known = sorted(t for t in config_times if t is not None)
        p99 = known[min(len(known) - 1, int(0.99 * len(known)))] if known else None
        return {
            "mode": self.args.bare or "antibody",
            "clients": len(self.probes),
            "rate_per_s": self.args.rate,
            "graceful_timeout_s": self.args.graceful_timeout,
            "worker_timeout_s": self.args.worker_timeout,
            "retire_spread_ms": self.args.spread_ms,
            "preload": self.args.preload,
            "worker_class": self.args.worker_class,
            "expected": expected,
            "effect_ms": None if effect_ms is None else round(effect_ms),
            "effect_seen_ms": None if effect_seen_ms is None else round(effect_seen_ms),
            "old_workers_gone_ms": None if old_gone_ms is None else round(old_gone_ms),
            "all_on_new_config_ms": all_new,
            "new_config_p99_ms": p99,
            "disconnects": sum(c["disconnects"] for c in per_client),
            "first_disconnect_ms": disconnect_times[0] if disconnect_times else None,
            "last_disconnect_ms": disconnect_times[-1] if disconnect_times else None,
            "max_reconnect_ms": max(reconnects) if reconnects else 0,
            "events_published": last,
            "events_lost": sum(c["lost"] for c in per_client),
            "action": action,
            "per_client": per_client,
        }

    # -- stop -------------------------------------------------------------------------

    def stop(self):
        if self.broadcaster is not None:
            self.broadcaster.stop_event.set()
        for p in self.probes:
            try:
                p.client.disconnect()
            except Exception:
                pass
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGINT)  # quick shutdown of master and workers
            try:
                self.gunicorn.wait(10)
            except subprocess.TimeoutExpired:
                self.gunicorn.kill()
                self.gunicorn.wait(5)
        # Workers this run started (from their registrations) that outlived the master.
        for pid in self.started_workers:
            if reload_state.pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.redis is not None:
            self.redis.terminate()
            try:
                self.redis.wait(5)
            except subprocess.TimeoutExpired:
                self.redis.kill()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="broadcast events per second")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=1.5,
                        help="stop watching this long after every client is on the new config")
    parser.add_argument("--bare", choices=["inplace", "hup", "hup-retire", "plain-hup"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="default: clients + 16")
    parser.add_argument("--worker-class", choices=["gthread", "gevent"], default="gthread",
                        help="gevent needs the gevent package (not in requirements.txt)")
    parser.add_argument("--graceful-timeout", type=int, default=30)
    parser.add_argument("--worker-timeout", type=int, default=30,
                        help="gunicorn --timeout: what finally kills a retired gthread worker "
                             "whose threads still serve WebSockets")
    parser.add_argument("--spread-ms", type=int, default=500)
    parser.add_argument("--no-replay", action="store_true",
                        help="clients do not send their last seq (shows what replay saves)")
    parser.add_argument("--no-retire", action="store_true",
                        help="ANTIBODY_RETIRE=0: retired workers are left to gunicorn (a plain "
                             "HUP target; implied by --bare plain-hup)")
    parser.add_argument("--preload", action="store_true", help="gunicorn --preload")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if not (1 <= args.clients <= 500 and 0 < args.rate <= 200 and 0 < args.window <= 120):
        parser.error("--clients 1..500, --rate 0..200, --window 0..120")

    harness = Harness(args)
    try:
        harness.start()
        print(json.dumps({"ready": True, "state_dir": harness.state_dir,
                          "env_file": harness.env_file, "master_pid": harness.master_pid,
                          "port": harness.port, "queue": harness.queue_url,
                          "workers": sorted(harness.started_workers)}), flush=True)
        if args.bare:
            expected = "new-%d-%d" % (int(time.time()), random.randrange(1000))
            t0 = now_ms()
            harness.expected_ref[:] = [expected, t0]
            action = {}
            trigger = threading.Thread(target=lambda: action.update(harness.trigger_bare(expected)))
            trigger.start()
        else:
            go = sys.stdin.readline().split()
            if len(go) != 2 or go[0] != "GO":
                raise RuntimeError("expected `GO <epoch_ms>` on stdin, got %r" % go)
            t0 = float(go[1])
            expected = sys.stdin.readline().rstrip("\n")
            harness.expected_ref[:] = [expected, t0]
            # A client may have seen the value before the GO line arrived.
            action, trigger = None, None
        effect_ms, effect_seen_ms, old_gone_ms = harness.watch(expected, t0)
        if trigger is not None:
            trigger.join(30)
        print(json.dumps(harness.result(expected, t0, effect_ms, effect_seen_ms, old_gone_ms, action)), flush=True)
        return 0
    except Exception as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    finally:
        harness.stop()


if __name__ == "__main__":
    sys.exit(main())
