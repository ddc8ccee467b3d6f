#!/usr/bin/env python3
"""A webhook receiver that verifies Herald's signatures with the standard library.

    herald webhook create http://127.0.0.1:9000/ > secret.txt   # HERALD_WEBHOOK_ALLOW_PRIVATE=true for 127.0.0.1
    python3 examples/webhook_receiver.py 9000 "$(cat secret.txt)"

Prints one line per verified event (`<webhook-id> <type> <notification id> <status>`),
answers 204; a bad or stale signature gets 400 and is not printed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

# -- verify
import base64
import hashlib
import hmac
import time


def verify(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
    """Standard Webhooks: HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False  # stale or missing: a replay
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, signature.split(",", 1)[1])
        for signature in headers.get("webhook-signature", "").split()
        if signature.startswith("v1,")
    )
# -- end


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not verify(secret, self.headers, body):
                self.send_response(400)
                self.end_headers()
                return
            event = json.loads(body)
            # The same webhook-id on every retry: drop a copy you already handled.
            print(
                self.headers["webhook-id"],
                event["type"],
                event["data"]["id"],
                event["data"]["status"],
                flush=True,
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
