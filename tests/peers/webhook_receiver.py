"""A CI webhook stand-in: receives Antibody's CloudEvents and checks their HMAC signature.

Prints {"ready": true, "port": P} once listening on 127.0.0.1 (port 0 picks a free one), then
one JSON line per POST: the path, the status answered, whether the signature verified, the
headers that matter and the parsed body. The first --fail-first requests for each CloudEvent id
are answered 500 (to exercise retries); a bad signature is answered 401.
"""
import argparse
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    secret = args.secret.encode()
    seen = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            signature_ok = hmac.compare_digest(expected, self.headers.get("X-Antibody-Signature", ""))
            try:
                event = json.loads(body)
            except ValueError:
                event = None
            key = (self.path, event.get("id") if isinstance(event, dict) else None)
            with lock:
                attempt = seen.get(key, 0) + 1
                seen[key] = attempt
            if not signature_ok:
                status = 401
            elif attempt <= args.fail_first:
                status = 500
            else:
                status = 200
            record = {
                "path": self.path,
                "attempt": attempt,
                "status": status,
                "signature_ok": signature_ok,
                "content_type": self.headers.get("Content-Type"),
                "delivery": self.headers.get("X-Antibody-Delivery"),
                "event": event,
            }
            with lock:  # one whole line per record, even from concurrent handler threads
                print(json.dumps(record), flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
