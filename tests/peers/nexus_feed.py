#!/usr/bin/env python3
"""NEXUS stand-in: serves nexus.v1.NexusFeed/Subscribe with grpcio, from the same proto/nexus.proto
Antibody builds with. The Python code is generated at startup with grpcio-tools into a temp dir.

It streams the alerts of a JSON-lines file, one every --interval seconds, in the wire forms the
real NEXUS uses: the raw JSON envelope in `json` (--mode json), the typed fields (--mode typed),
or alternating (--mode mixed, the default). A line {"_raw": "...", "_id": "..."} is sent as that
raw `json` text (for malformed input). It honours `resume_after_id`: a subscriber that handled
alert X gets only the alerts after X. With --hold the stream stays open after the last alert.

Every event is logged as one JSON line on stdout (ready, subscribe, sent, done), so tests can
check what was sent to whom. Serves gRPC reflection too. Listens on 127.0.0.1 only.
With --tls-cert/--tls-key (PEM) it serves over TLS instead of plaintext.
"""

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import grpc_tools
from grpc_reflection.v1alpha import reflection
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK = threading.Lock()


def log(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def generate(proto):
    """Compile the proto with grpcio-tools into a temp dir and import the modules."""
    out = tempfile.mkdtemp(prefix="nexus-proto-")
    include = os.path.dirname(os.path.abspath(proto))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{include}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.basename(proto),
    ]
    if protoc.main(args) != 0:
        sys.exit(f"nexus_feed: protoc failed for {proto}")
    sys.path.insert(0, out)
    return importlib.import_module("nexus_pb2"), importlib.import_module("nexus_pb2_grpc")


def load_alerts(path):
    alerts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                alerts.append(json.loads(line))
    return alerts


def alert_id(alert):
    return alert.get("_id", alert.get("id", ""))


def to_message(pb2, alert, index, mode):
    if "_raw" in alert:
        return pb2.ThreatAlert(id=alert.get("_id", ""), json=alert["_raw"])
    typed = mode == "typed" or (mode == "mixed" and index % 2 == 0)
    if not typed:
        return pb2.ThreatAlert(json=json.dumps(alert))
    message = pb2.ThreatAlert(
        id=str(alert.get("id", "")),
        source=str(alert.get("source", "")),
        category=str(alert.get("category", "")),
        severity=str(alert.get("severity", "")),
        msg=str(alert.get("msg", "")),
    )
    if alert.get("patch_hint") is not None:
        message.patch_hint = alert["patch_hint"]
    if alert.get("ts") is not None:
        message.ts = alert["ts"]
    return message


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alerts", required=True, help="JSON lines, one alert envelope each")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between alerts")
    parser.add_argument("--mode", choices=["json", "typed", "mixed"], default="mixed")
    parser.add_argument("--hold", action="store_true", help="keep the stream open after the last alert")
    parser.add_argument("--proto", default=os.path.join(ROOT, "proto", "nexus.proto"))
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate (needs --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.exit("nexus_feed: --tls-cert and --tls-key go together")

    pb2, pb2_grpc = generate(args.proto)
    alerts = load_alerts(args.alerts)
    stopping = threading.Event()

    class Feed(pb2_grpc.NexusFeedServicer):
        def Subscribe(self, request, context):
            ids = [alert_id(a) for a in alerts]
            start = 0
            resume = request.resume_after_id
            if resume:
                if resume in ids:
                    start = len(ids) - ids[::-1].index(resume)
                else:
                    log(event="unknown_resume_id", resume_after_id=resume)
            log(event="subscribe", resume_after_id=resume, subscriber=request.subscriber, start=start)
            for index in range(start, len(alerts)):
                if stopping.wait(args.interval) or not context.is_active():
                    return
                yield to_message(pb2, alerts[index], index, args.mode)
                log(event="sent", id=ids[index], index=index)
            log(event="done", sent_through=len(alerts))
            while args.hold and context.is_active() and not stopping.is_set():
                time.sleep(0.05)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb2_grpc.add_NexusFeedServicer_to_server(Feed(), server)
    names = (pb2.DESCRIPTOR.services_by_name["NexusFeed"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    address = f"127.0.0.1:{args.port}"
    if args.tls_cert:
        with open(args.tls_key, "rb") as key, open(args.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound != args.port:
        sys.exit(f"nexus_feed: could not bind 127.0.0.1:{args.port}")
    server.start()

    def stop(*_):
        stopping.set()
        server.stop(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(event="ready", port=args.port, alerts=len(alerts), tls=bool(args.tls_cert))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
