"""The CLI contract with Antibody's controller, against real (stand-in) worker processes.

A stand-in worker is a real process registered the way the companion registers (it writes
STATE_DIR/workers/<pid>.json), so liveness checks, acks and timeouts run for real; the
gunicorn tests (test_gunicorn.py) cover the real app.
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from antibody_reload import state

PY = sys.executable


def run_cli(*args, timeout=30):
    done = subprocess.run([PY, "-m", "antibody_reload", *args], capture_output=True, text=True,
                          timeout=timeout)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "exactly one JSON line on stdout: %r" % done.stdout
    return done.returncode, json.loads(lines[0]), done.stderr


def sha(value):
    return hashlib.sha256(value.encode()).hexdigest()


# A process that acks generations like a companion would (or not, with ACK=0).
STANDIN = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, %(path)r)
    from antibody_reload import state, envfile
    root, env_file, ack = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    os.makedirs(state.workers_dir(root), exist_ok=True)
    path = os.path.join(state.workers_dir(root), "%%d.json" %% os.getpid())
    def register(gen, env):
        state.write_json_atomic(path, {"pid": os.getpid(), "ppid": os.getppid(),
            "started_at": time.time(), "generation": gen, "env": env, "ready": True})
    register(None, {})
    print("registered", flush=True)
    while True:
        gen = state.read_generation(root)
        if ack and gen is not None:
            register(gen, envfile.digests(envfile.read(env_file) or {}))
        time.sleep(0.05)
""")


@pytest.fixture
def standin(tmp_path):
    procs = []
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def start(ack=True):
        proc = subprocess.Popen([PY, "-c", STANDIN % {"path": package_dir}, str(tmp_path / "state"),
                                 str(tmp_path / "app.env"), "1" if ack else "0"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "registered"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args,needle", [
    ([], "subcommand"),
    (["reload"], "--generation"),
    (["reload", "--generation", "g", "--expect-env", "A=nothex"], "--expect-env"),
    (["reload", "--generation", "g", "--expect-env", "A=" + "0" * 64], "--env-file"),
    (["reload", "--generation", "g", "--timeout", "0"], "--timeout"),
    (["hup", "--timeout", "-1"], "--timeout"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2_and_name_the_field(args, needle):
    code, out, err = run_cli(*args)
    assert code == 2
    assert out["error"] == "usage"
    assert needle in out["reason"] and needle in err


def test_no_worker(tmp_path):
    root = str(tmp_path / "state")
    assert run_cli("status", "--state-dir", root)[0] == 5
    code, out, _ = run_cli("reload", "--state-dir", root, "--generation", "g1")
    assert (code, out["error"]) == (5, "no_worker")
    code, out, _ = run_cli("hup", "--state-dir", root)
    assert (code, out["error"]) == (6, "no_master")


def test_dead_workers_are_ignored(tmp_path):
    root = str(tmp_path / "state")
    os.makedirs(state.workers_dir(root))
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    state.write_json_atomic(os.path.join(state.workers_dir(root), "%d.json" % dead.pid),
                            {"pid": dead.pid, "ppid": os.getpid(), "ready": True})
    assert run_cli("status", "--state-dir", root)[0] == 5


def test_reload_acked_and_idempotent(tmp_path, standin):
    root = str(tmp_path / "state")
    (tmp_path / "app.env").write_text("VAEL_MODE=fast\n")
    worker = standin()
    code, out, _ = run_cli("reload", "--state-dir", root, "--generation", "g1",
                           "--env-file", str(tmp_path / "app.env"),
                           "--expect-env", "VAEL_MODE=" + sha("fast"))
    assert code == 0, out
    assert out["mode"] == "in_place" and out["generation"] == "g1"
    assert out["workers"] == [{"pid": worker.pid, "env": {"VAEL_MODE": sha("fast")}}]
    started = time.monotonic()
    code, again, _ = run_cli("reload", "--state-dir", root, "--generation", "g1")
    assert code == 0 and again["generation"] == "g1"
    assert time.monotonic() - started < 2


def test_reload_timeout_names_the_worker_that_did_not_ack(tmp_path, standin):
    root = str(tmp_path / "state")
    worker = standin(ack=False)
    code, out, err = run_cli("reload", "--state-dir", root, "--generation", "g2", "--timeout", "0.5")
    assert code == 4
    assert [w["pid"] for w in out["not_acked"]] == [worker.pid]
    assert str(worker.pid) in err


def test_reload_waits_for_the_env_file_then_gives_up(tmp_path, standin):
    root = str(tmp_path / "state")
    env = tmp_path / "app.env"
    env.write_text("VAEL_MODE=old\n")
    standin()
    code, out, err = run_cli("reload", "--state-dir", root, "--generation", "g3", "--env-file", str(env),
                             "--expect-env", "VAEL_MODE=" + sha("new"), "--timeout", "0.5")
    assert code == 3 and out["error"] == "env_file_not_synced"
    assert out["mismatch"] == {"VAEL_MODE": sha("old")}
    assert "not synced" in err
    # Nothing was requested of the workers.
    assert state.read_generation(root) is None


def test_reload_sees_a_late_env_file_sync(tmp_path, standin):
    root = str(tmp_path / "state")
    env = tmp_path / "app.env"
    env.write_text("VAEL_MODE=old\n")
    standin()
    proc = subprocess.Popen([PY, "-m", "antibody_reload", "reload", "--state-dir", root,
                             "--generation", "g4", "--env-file", str(env),
                             "--expect-env", "VAEL_MODE=" + sha("new")],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the kubelet syncs the mounted ConfigMap late
    env.write_text("VAEL_MODE=new\n")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert json.loads(out)["workers"][0]["env"] == {"VAEL_MODE": sha("new")}


def test_hup_refuses_workers_without_one_common_master(tmp_path, standin):
    root = str(tmp_path / "state")
    standin()
    # A second registration claiming another parent: ambiguous, nothing is signalled.
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        state.write_json_atomic(os.path.join(state.workers_dir(root), "%d.json" % other.pid),
                                {"pid": other.pid, "ppid": 1, "ready": True})
        code, out, err = run_cli("hup", "--state-dir", root)
        assert (code, out["error"]) == (6, "no_master")
        assert "master" in err
    finally:
        other.kill()
        other.wait()
