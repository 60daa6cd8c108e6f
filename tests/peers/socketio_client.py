#!/usr/bin/env python3
"""A Socket.IO client as the VAEL UI uses (python-socketio 5.x, the Flask-SocketIO protocol).

Connects to Antibody's Socket.IO endpoint and prints one JSON line on stdout per thing that
happens, so a test can read them:
  {"event": "connect", "sid": ..., "transport": ...}
  {"event": "patch_applied", "transport": ..., "data": {...}}
  {"event": "disconnect"}
  {"event": "connect_error", "message": ...}   (the server refused the connect)
Exits 0 after --count events, 2 on timeout, 3 when the connect was refused.
--token is sent in the auth payload ({"token": ...}, --token-via auth) or as an
Authorization: Bearer header on the handshake (--token-via header).
"""

import argparse
import json
import sys
import threading

import socketio


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--event", action="append", required=True, help="event to listen for (repeatable)")
    parser.add_argument("--transport", choices=["default", "websocket"], default="default",
                        help="default: long-polling first, then upgrade to WebSocket")
    parser.add_argument("--count", type=int, default=1, help="exit after this many events")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--token", help="a token with scope read (reveal: values shown)")
    parser.add_argument("--token-via", choices=["auth", "header"], default="auth")
    args = parser.parse_args()

    sio = socketio.Client(reconnection=False)
    done = threading.Event()
    lock = threading.Lock()
    received = 0

    def say(obj):
        with lock:
            print(json.dumps(obj), flush=True)

    @sio.event
    def connect():
        say({"event": "connect", "sid": sio.sid, "transport": sio.transport()})

    refusal = {}

    @sio.event
    def connect_error(data):
        # The server's reason ({"message": ...} from socketioxide), before connect() raises.
        refusal["message"] = data.get("message") if isinstance(data, dict) else data

    @sio.event
    def disconnect(*_reason):
        say({"event": "disconnect"})
        done.set()

    def listen(name):
        def handler(data):
            nonlocal received
            say({"event": name, "transport": sio.transport(), "data": data})
            with lock:
                received += 1
                if received >= args.count:
                    done.set()
        sio.on(name, handler)

    for name in args.event:
        listen(name)

    transports = ["websocket"] if args.transport == "websocket" else None
    auth, headers = None, {}
    if args.token is not None and args.token_via == "auth":
        auth = {"token": args.token}
    elif args.token is not None:
        headers["Authorization"] = f"Bearer {args.token}"
    try:
        sio.connect(args.url, transports=transports, wait_timeout=10, auth=auth, headers=headers)
    except socketio.exceptions.ConnectionError as refused:
        say({"event": "connect_error", "message": refusal.get("message", str(refused))})
        return 3
    finished = done.wait(args.timeout)
    if sio.connected:
        sio.disconnect()
    return 0 if finished and received >= args.count else 2


if __name__ == "__main__":
    sys.exit(main())
