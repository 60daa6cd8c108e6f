"""A browser stand-in: a python-socketio client connected to the VAEL UI (not to Antibody).

Prints one JSON line per event received: {"event": NAME, "data": DATA}. Before that, one
{"ready": ...} line once the UI has subscribed to its Redis channel (Flask-SocketIO subscribes
when its first client connects), so a test knows nothing published afterwards is missed.

    python socketio_listener.py --url http://127.0.0.1:P --redis redis://127.0.0.1:R/0 \
        --event patch_applied --event patch_failed
"""
import argparse
import json
import sys
import threading
import time

import redis
import socketio


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", default="flask-socketio")
    parser.add_argument("--event", action="append", required=True)
    args = parser.parse_args()

    client = socketio.Client(reconnection=True)
    lock = threading.Lock()

    def handler(name):
        def on_event(data):
            with lock:  # one whole line per event, even from concurrent handler threads
                print(json.dumps({"event": name, "data": data}), flush=True)

        return on_event

    for name in args.event:
        client.on(name, handler(name))
    client.connect(args.url, wait_timeout=10)

    queue = redis.Redis.from_url(args.redis)
    deadline = time.monotonic() + 20
    while queue.pubsub_numsub(args.channel)[0][1] < 1:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the UI never subscribed to " + args.channel}), flush=True)
            sys.exit(1)
        time.sleep(0.05)
    print(json.dumps({"ready": True, "transport": client.transport()}), flush=True)
    client.wait()


if __name__ == "__main__":
    main()
