#!/usr/bin/env python3
"""NEXUS Socket.IO stand-in: a Flask-SocketIO server (threading mode, WebSocket transport through
simple-websocket) that emits `nexus_alert` events, as NEXUS does.

Control endpoints for tests (loopback only):
  GET  /clients  -> {"connected": N}       Socket.IO clients connected now
  POST /emit     -> {"emitted": N}         body: one alert, or a list; each is emitted as its own
                                           `nexus_alert` event to every connected client
Events are logged as JSON lines on stdout (ready, connect, disconnect, emit).
With --tls-cert/--tls-key (PEM) everything is served over TLS (https:// and wss://).
"""

import argparse
import json
import sys
import threading

from flask import Flask, jsonify, request
from flask_socketio import SocketIO

LOCK = threading.Lock()


def log(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, default=25, help="Engine.IO pingInterval, seconds")
    parser.add_argument("--ping-timeout", type=float, default=20, help="Engine.IO pingTimeout, seconds")
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate (needs --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.exit("nexus_ws: --tls-cert and --tls-key go together")
    tls = {"ssl_context": (args.tls_cert, args.tls_key)} if args.tls_cert else {}

    app = Flask(__name__)
    socketio = SocketIO(
        app,
        async_mode="threading",
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
    clients = set()

    @socketio.on("connect")
    def on_connect(auth=None):
        with LOCK:
            clients.add(request.sid)
        log(event="connect", sid=request.sid)

    @socketio.on("disconnect")
    def on_disconnect(*_reason):
        with LOCK:
            clients.discard(request.sid)
        log(event="disconnect", sid=request.sid)

    @app.get("/clients")
    def connected():
        with LOCK:
            return jsonify(connected=len(clients))

    @app.post("/emit")
    def emit():
        body = request.get_json(force=True)
        alerts = body if isinstance(body, list) else [body]
        for alert in alerts:
            socketio.emit("nexus_alert", alert)
        log(event="emit", count=len(alerts))
        return jsonify(emitted=len(alerts))

    log(event="ready", port=args.port, tls=bool(tls))
    socketio.run(app, host="127.0.0.1", port=args.port, allow_unsafe_werkzeug=True, use_reloader=False, **tls)


if __name__ == "__main__":
    main()
