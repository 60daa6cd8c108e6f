#!/usr/bin/env python3
"""NEXUS stand-in built the way the original Antibody's docs use it: a plain, package-less
`nexus.proto` (service NexusFeed, Subscribe(SubscribeRequest), a message whose only field is
`string json = 1`), generated at startup with grpcio-tools. It does not know this repo's
`nexus.v1` package, so a subscriber must fall back to `/NexusFeed/Subscribe`.

Streams each line of --alerts (raw JSON text, sent unchanged in `json`) once per subscription,
then holds the stream open. Logs JSON lines on stdout: ready, subscribe, sent. 127.0.0.1 only.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO = """syntax = "proto3";
message SubscribeRequest {}
message Alert { string json = 1; }
service NexusFeed { rpc Subscribe(SubscribeRequest) returns (stream Alert); }
"""
LOCK = threading.Lock()


def log(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def generate():
    out = tempfile.mkdtemp(prefix="nexus-plain-")
    with open(os.path.join(out, "nexus.proto"), "w") as f:
        f.write(PROTO)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{out}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", "nexus.proto"]
    if protoc.main(args) != 0:
        sys.exit("nexus_plain: protoc failed")
    sys.path.insert(0, out)
    return importlib.import_module("nexus_pb2"), importlib.import_module("nexus_pb2_grpc")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alerts", required=True)
    args = parser.parse_args()
    pb2, pb2_grpc = generate()
    with open(args.alerts) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]

    class Feed(pb2_grpc.NexusFeedServicer):
        def Subscribe(self, request, context):
            log(event="subscribe", peer=context.peer())
            for line in lines:
                yield pb2.Alert(json=line)
                log(event="sent", json=line)
            while context.is_active():
                time.sleep(0.1)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_NexusFeedServicer_to_server(Feed(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    log(event="ready", port=args.port)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
