"""Slack's request signatures (api.slack.com/authentication/verifying-requests-from-slack).

Slack signs every request it sends to the app's URLs: ``X-Slack-Request-Timestamp: <unix
seconds>`` and ``X-Slack-Signature: v0=<hex HMAC-SHA256>`` with the app's signing secret as
the key and ``v0:<timestamp>:<raw body>`` as the message. A receiver recomputes it over the
raw body bytes, compares in constant time and refuses a timestamp more than five minutes
from its clock (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
TOLERANCE = 300.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v0=" + mac.hexdigest()


def headers(secret: str, body: bytes, t: int | None = None) -> dict[str, str]:
    """The headers Slack would send with ``body`` now (or at ``t``): for tests and tools."""
    timestamp = str(int(time.time()) if t is None else t)
    return {TIMESTAMP: timestamp, SIGNATURE: signature(secret, timestamp, body)}


def refusal(
    secret: str,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> str | None:
    """Why the request is not Slack's (None: it is)."""
    if not timestamp or not given:
        return f"missing {TIMESTAMP} or {SIGNATURE}"
    try:
        t = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP} is not a number"
    if abs((time.time() if now is None else now) - t) > tolerance:
        return f"{TIMESTAMP} is more than {tolerance:g} s from our clock"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode()):
        return "bad signature"
    return None
