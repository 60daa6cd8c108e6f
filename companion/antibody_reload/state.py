"""The state directory shared by the workers and the CLI.

STATE_DIR/request.json        {"generation": G}       written by the CLI
STATE_DIR/workers/<pid>.json  one per live worker      written by that worker

Every write is atomic (temporary file + rename) so a reader never sees half a file. Files of
dead processes are ignored (a worker killed with SIGKILL cannot remove its own).
"""
import json
import os
import threading

DEFAULT_STATE_DIR = "/tmp/antibody-reload"


def state_dir(explicit=None):
    return explicit or os.environ.get("ANTIBODY_STATE_DIR") or DEFAULT_STATE_DIR


def workers_dir(root):
    return os.path.join(root, "workers")


def request_path(root):
    return os.path.join(root, "request.json")


def write_json_atomic(path, obj):
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_generation(root):
    request = read_json(request_path(root))
    if isinstance(request, dict) and isinstance(request.get("generation"), str):
        return request["generation"]
    return None


def pid_alive(pid):
    """True while the process exists and is not a zombie; EPERM counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as f:
            # "pid (comm) S ..." — comm may contain spaces, the state follows the last ")".
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def live_workers(root):
    """Registrations of live workers, sorted by start time."""
    found = []
    try:
        names = os.listdir(workers_dir(root))
    except OSError:
        return found
    for name in names:
        if not name.endswith(".json"):
            continue
        info = read_json(os.path.join(workers_dir(root), name))
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            continue
        if pid_alive(info["pid"]):
            found.append(info)
    found.sort(key=lambda w: (w.get("started_at") or 0, w["pid"]))
    return found


def _stat(pid):
    """(ppid, starttime ticks) from /proc/<pid>/stat, or None."""
    try:
        with open("/proc/%s/stat" % pid, encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def younger_siblings(pid, ppid):
    """Pids of live processes with the same parent started after `pid` (a gunicorn master
    forks the new workers before it retires the old ones; on a plain shutdown there are none)."""
    mine = _stat(pid)
    if mine is None:
        return []
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == pid:
            continue
        info = _stat(name)
        if info is not None and info[0] == ppid and info[1] > mine[1]:
            found.append(int(name))
    return found
