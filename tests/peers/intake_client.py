#!/usr/bin/env python3
"""A grpcio client for Antibody's gRPC side, generated at startup from proto/nexus.proto.

  intake_client.py --target 127.0.0.1:PORT list
      Lists the services the server announces through gRPC reflection (like `grpcurl list`).
  intake_client.py --target 127.0.0.1:PORT submit --token TOKEN '<alert JSON>' [--typed]
      Calls AlertIntake.Submit; prints {"code": ..., "reply": {...}} or {"code": ..., "details": ...}.
"""

import argparse
import json
import os
import sys

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nexus_feed import ROOT, generate  # noqa: E402  (same generator as the NEXUS stand-in)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    submit = sub.add_parser("submit")
    submit.add_argument("--token", default="")
    submit.add_argument("--typed", action="store_true", help="send typed fields instead of `json`")
    submit.add_argument("alert")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.target)
    if args.command == "list":
        database = ProtoReflectionDescriptorDatabase(channel)
        print(json.dumps({"services": sorted(database.get_services())}))
        return

    pb2, pb2_grpc = generate(os.path.join(ROOT, "proto", "nexus.proto"))
    stub = pb2_grpc.AlertIntakeStub(channel)
    if args.typed:
        alert = json.loads(args.alert)
        message = pb2.ThreatAlert(**{k: v for k, v in alert.items() if v is not None})
    else:
        message = pb2.ThreatAlert(json=args.alert)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    try:
        reply = stub.Submit(message, metadata=metadata, timeout=10)
        print(json.dumps({"code": "OK", "reply": {
            "outcome": reply.outcome, "plan": reply.plan, "reason": reply.reason, "message": reply.message}}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))


if __name__ == "__main__":
    main()
