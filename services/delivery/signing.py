"""Webhook signatures: ``X-Relaydesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The HMAC key is the endpoint's secret; the message is ``f"{t}.{body}"`` with the raw body
bytes exactly as sent. Receivers recompute it, compare in constant time, and refuse a ``t``
too far from their clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from connectors.sdk.signatures import constant_time_equal

HEADER = "X-Relaydesk-Signature"
DEFAULT_TOLERANCE = 300.0


def signature(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """The header value for ``body`` signed now (or at ``t``)."""
    t = int(time.time()) if t is None else t
    return f"t={t},v1={signature(secret, body, t)}"


def verify(
    secret: str, header: str, body: bytes, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = signature(secret, body, t)
    # The header is whoever sent the request's: non-ASCII in it is a refusal, not a TypeError.
    return any(constant_time_equal(expected, candidate) for candidate in parts.get("v1", []))
