"""The companion in a real Flask-SocketIO app under gunicorn, with real python-socketio clients
on WebSocket and a broadcaster on a real Redis queue: tests/peers/ws_harness.py, bounded
(5 clients, a few seconds each, loopback only)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

HARNESS = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "peers", "ws_harness.py")

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed (tests/peers/setup.sh)")


def harness(*args, timeout=90):
    done = subprocess.run([sys.executable, HARNESS, "--clients", "5", *args],
                          capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    assert lines[0]["ready"] is True
    return lines[-1]


def new_pids(result):
    return {c["pid"] for c in result["per_client"]}


def test_in_place_reload_keeps_every_client():
    r = harness("--bare", "inplace")
    assert r["action"]["rc"] == 0, r["action"]
    assert r["disconnects"] == 0
    assert r["events_lost"] == 0
    assert r["all_on_new_config_ms"] is not None and r["all_on_new_config_ms"] <= 1000
    # The CLI acknowledged only once every worker had applied the new env.
    assert r["effect_ms"] <= r["action"]["done_ms"]


def test_hup_hands_clients_over_spread_and_without_loss():
    r = harness("--bare", "hup")
    assert r["action"]["rc"] == 0, r["action"]
    out = r["action"]["stdout"]
    assert r["old_workers_gone_ms"] < 3000  # not gunicorn's 30 s graceful timeout
    assert r["all_on_new_config_ms"] is not None and r["all_on_new_config_ms"] <= 4000
    assert new_pids(r) == set(out["new"])
    assert r["disconnects"] == 5
    assert r["last_disconnect_ms"] - r["first_disconnect_ms"] >= 50  # spread, not all at once
    assert r["events_lost"] == 0
    # `hup` returned only after the old worker was gone and the new one ready.
    assert r["action"]["done_ms"] >= r["effect_ms"]


def test_hup_with_preload():
    r = harness("--bare", "hup-retire", "--preload")
    assert r["old_workers_gone_ms"] < 3000
    assert r["all_on_new_config_ms"] is not None and r["all_on_new_config_ms"] <= 4000
    assert r["events_lost"] == 0


def test_without_replay_a_hand_over_loses_events():
    # The control for the zero-loss claim: clients that do not pass their last seq miss what
    # was broadcast while they reconnected.
    r = harness("--bare", "hup-retire", "--no-replay")
    assert r["disconnects"] == 5
    assert r["events_lost"] > 0


def test_plain_hup_keeps_clients_on_the_old_worker_until_graceful_timeout():
    # The baseline the companion fixes (ANTIBODY_RETIRE=0): gunicorn alone.
    r = harness("--bare", "plain-hup", "--graceful-timeout", "3", "--worker-timeout", "3",
                "--window", "9")
    assert r["old_workers_gone_ms"] >= 2500
    assert r["first_disconnect_ms"] >= 2500
    assert r["last_disconnect_ms"] - r["first_disconnect_ms"] < 300  # all at once


def test_driven_protocol_as_the_controller_uses_it(tmp_path):
    """ready line -> (the controller acts) -> GO <t0> + expected value -> one result line."""
    import hashlib
    import time

    proc = subprocess.Popen([sys.executable, HARNESS, "--clients", "3", "--window", "8"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] is True and ready["master_pid"] > 1
        t0 = int(time.time() * 1000)
        proc.stdin.write("GO %d\nfixed\n" % t0)
        proc.stdin.flush()
        with open(ready["env_file"], "w") as f:  # what the kubelet's ConfigMap sync does
            f.write("VAEL_MODE=fixed\n")
        done = subprocess.run(
            [sys.executable, "-m", "antibody_reload", "reload", "--state-dir", ready["state_dir"],
             "--generation", "plan-1", "--env-file", ready["env_file"],
             "--expect-env", "VAEL_MODE=" + hashlib.sha256(b"fixed").hexdigest()],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        result = json.loads(proc.stdout.readline())
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["mode"] == "antibody"
    assert result["disconnects"] == 0 and result["events_lost"] == 0
    assert result["effect_ms"] is not None
    assert result["all_on_new_config_ms"] is not None
    assert result["effect_ms"] <= result["all_on_new_config_ms"] + 100


def test_gevent_worker_has_no_thread_per_websocket_and_hands_over():
    pytest.importorskip("gevent")
    # 5 clients on a worker that would have 2 threads under gthread.
    r = harness("--worker-class", "gevent", "--threads", "2", "--bare", "hup")
    assert r["action"]["rc"] == 0, r["action"]
    assert r["old_workers_gone_ms"] < 3000
    assert r["all_on_new_config_ms"] is not None and r["all_on_new_config_ms"] <= 4000
    assert r["events_lost"] == 0
