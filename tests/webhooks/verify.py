#!/usr/bin/env python3
"""Verifies captured webhook deliveries with the `standardwebhooks` package
(an implementation independent of Herald's).

Usage: verify.py CAPTURE.json
CAPTURE.json: {"secret": "whsec_...", "deliveries": [{"headers": {...},
"body_base64": "..."}]}. Exits 0 when every delivery verifies, 1 when one
does not (naming it), 3 when the package is missing.
"""

import base64
import json
import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as e:  # pragma: no cover
    print(f"standardwebhooks is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        capture = json.load(f)
    webhook = Webhook(capture["secret"])
    for i, delivery in enumerate(capture["deliveries"]):
        body = base64.b64decode(delivery["body_base64"])
        try:
            webhook.verify(body, delivery["headers"])
        except WebhookVerificationError as e:
            print(f"delivery {i} ({delivery['headers'].get('webhook-id')}): {e}")
            return 1
    print(f"{len(capture['deliveries'])} deliveries verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
