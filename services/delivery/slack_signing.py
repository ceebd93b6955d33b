"""Slack's request signatures (api.slack.com/authentication/verifying-requests-from-slack).

Slack signs every request it sends to the app's URLs: ``X-Slack-Request-Timestamp: <unix
seconds>`` and ``X-Slack-Signature: v0=<hex HMAC-SHA256>`` with the app's signing secret as
the key and ``v0:<timestamp>:<raw body>`` as the message. A receiver recomputes it over the
raw body bytes, compares in constant time and refuses a timestamp more than five minutes
from its clock (a replayed request).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from connectors.sdk.signatures import constant_time_equal, first_match, sign, timestamp_fresh

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
TOLERANCE = 300.0
BAD_SIGNATURE = "bad signature"
# What the log adds to a bad signature: a regenerated signing secret refuses every request alike.
ROTATED_HINT = "signed with another signing secret? rotated? list the other in [slack] extra_signing_secrets"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return sign(secret, b"v0:" + timestamp.encode() + b":" + body, prefix="v0=")


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
    extra: Sequence[str] = (),
) -> str | None:
    """Why the request is not Slack's (None: it is). ``extra``: other secrets accepted too
    (``[slack] extra_signing_secrets``: the old one while Slack's is regenerated)."""
    if not timestamp or not given:
        return f"missing {TIMESTAMP} or {SIGNATURE}"
    if not timestamp.isdigit():
        return f"{TIMESTAMP} is not a number"
    if not timestamp_fresh(timestamp, tolerance=tolerance, now=now):
        return f"{TIMESTAMP} is more than {tolerance:g} s from our clock"
    if first_match([secret, *extra], lambda key: constant_time_equal(signature(key, timestamp, body), given)) is None:
        return BAD_SIGNATURE
    return None
