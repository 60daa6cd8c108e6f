#!/usr/bin/env python3
"""Demo reporter: follows the NEXUS stand-in's log (when each alert was sent) and a watch on
PatchPlans (when each reached PatchApplied), then prints alert → plan → actions → result → time.

Usage: table.py NEXUS_LOG ALERTS_JSONL NAMESPACE KUBECTL METRICS_URL [TIMEOUT]
"""
import json
import subprocess
import sys
import threading
import time
import urllib.request

nexus_log, alerts_file, namespace, kubectl, metrics_url = sys.argv[1:6]
timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 90.0
alerts = [json.loads(line) for line in open(alerts_file) if line.strip()]
sent = {}      # alert id -> time sent
plans = {}     # alert id -> latest plan object
finished = {}  # alert id -> time the plan turned terminal (PatchApplied or Stalled)
lock = threading.Lock()


def follow_nexus():
    with open(nexus_log) as log:
        while True:
            line = log.readline()
            if not line:
                time.sleep(0.005)
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "sent":
                with lock:
                    sent.setdefault(event["id"], time.time())


def condition(plan, type_):
    for c in (plan.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def follow_plans():
    watch = subprocess.Popen([kubectl, "get", "patchplans", "-n", namespace, "-w", "-o", "json"],
                             stdout=subprocess.PIPE, text=True)
    decoder, buffer = json.JSONDecoder(), ""
    for chunk in iter(lambda: watch.stdout.readline(), ""):
        buffer += chunk
        while buffer.strip():
            try:
                obj, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            alert_id = ((obj.get("spec") or {}).get("alert") or {}).get("id")
            if not alert_id:
                continue
            ready, stalled = condition(obj, "Ready"), condition(obj, "Stalled")
            with lock:
                plans[alert_id] = obj
                done = (ready and ready["status"] == "True") or (stalled and stalled["status"] == "True")
                if done:
                    finished.setdefault(alert_id, time.time())


threading.Thread(target=follow_nexus, daemon=True).start()
threading.Thread(target=follow_plans, daemon=True).start()


def ignored_count():
    try:
        text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        if line.startswith("antibody_alerts_total{") and 'outcome="ignored"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


deadline = time.time() + timeout
expected_plans = len(alerts) - 1  # the info alert must produce no plan
while time.time() < deadline:
    with lock:
        all_sent = len(sent) == len(alerts)
        done = len(finished) >= expected_plans
    if all_sent and done and ignored_count() >= 1:
        break
    time.sleep(0.05)

print()
header = f"{'alert':<16} {'category/severity':<20} {'plan':<28} {'actions':<44} {'result':<22} {'alert→PatchApplied':>18}"
print(header)
print("-" * len(header))
failures = 0
for alert in alerts:
    aid = alert["id"]
    kind = f"{alert['category']}/{alert['severity']}"
    plan = plans.get(aid)
    if plan is None:
        expected_none = alert["severity"] in ("info", "warn", "low")
        result = "no action (by rule)" if expected_none and aid in sent else "MISSING"
        failures += 0 if result.startswith("no action") else 1
        print(f"{aid:<16} {kind:<20} {'—':<28} {'—':<44} {result:<22} {'—':>18}")
        continue
    name = plan["metadata"]["name"]
    actions = ", ".join(f"{a['type']}:{a['target']}" for a in plan["spec"]["actions"])
    ready, applied = condition(plan, "Ready"), condition(plan, "PatchApplied")
    ok = applied is not None and applied["status"] == "True"
    result = "PatchApplied" if ok else (ready or {}).get("reason", "pending")
    failures += 0 if ok else 1
    took = f"{(finished[aid] - sent[aid]) * 1000:.0f} ms" if ok and aid in sent and aid in finished else "—"
    print(f"{aid:<16} {kind:<20} {name:<28} {actions:<44} {result:<22} {took:>18}")
print()
sys.exit(1 if failures else 0)
