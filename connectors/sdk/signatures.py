"""HMAC webhook signatures, the way most providers sign: compute, compare in constant time,
refuse stale timestamps.

A provider signs the raw request body (sometimes with a timestamp in front) with a shared
secret and sends the MAC in a header, hex or base64, often behind a prefix:

* Meta: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>``
  → ``verify_hmac_sha256(secret, body, header, prefix="sha256=")``
* X (Twitter): ``sha256=<base64 HMAC-SHA256(secret, body)>``
  → ``verify_hmac_sha256(secret, body, header, prefix="sha256=", encoding="base64")``
* Slack, Stripe, Mailgun: a timestamp in the signed message and a clock check
  → ``verify_timestamped(...)`` (``signed=`` says how timestamp and body are joined).

Always verify over ``ProviderRequest.body`` (the bytes as received): a re-serialised JSON
body is different bytes. Twilio signs the URL and the form parameters with HMAC-SHA1, not
the body: see ``connectors/sms/signature.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

Encoding = Literal["hex", "base64"]
Secret = TypeVar("Secret", str, bytes)
Opened = TypeVar("Opened")
DEFAULT_TOLERANCE = 300.0  # seconds; Slack's and Stripe's five minutes


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    """The raw 32-byte HMAC-SHA256 of ``message`` under ``secret`` (a str is UTF-8 encoded)."""
    # hmac.digest: OpenSSL's one-shot HMAC, without the Python HMAC object (a webhook's hot path).
    return hmac.digest(_key(secret), message, hashlib.sha256)


def hmac_sha256_hex(secret: str | bytes, message: bytes) -> str:
    """Lowercase hex, as Meta, Slack, Stripe and Mailgun send it."""
    return hmac_sha256(secret, message).hex()


def hmac_sha256_base64(secret: str | bytes, message: bytes) -> str:
    """Standard base64 with padding, as X (Twitter) and Shopify send it."""
    return base64.b64encode(hmac_sha256(secret, message)).decode("ascii")


def sign(secret: str | bytes, message: bytes, *, prefix: str = "", encoding: Encoding = "hex") -> str:
    """The header value a provider would send for ``message``: for fakes in tests and for
    connectors that sign what they post."""
    mac = hmac_sha256_hex(secret, message) if encoding == "hex" else hmac_sha256_base64(secret, message)
    return prefix + mac


def constant_time_equal(expected: str, given: str) -> bool:
    """Whether the two strings are equal, in time that does not depend on where they differ.
    Non-ASCII in ``given`` (a forged header) is never equal, never an exception."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


def verify_hmac_sha256(
    secret: str | bytes,
    message: bytes,
    given: str | None,
    *,
    prefix: str = "",
    encoding: Encoding = "hex",
) -> bool:
    """Whether ``given`` (the header value, ``prefix`` included) signs ``message``.

    An empty secret or a missing header is never valid (a connector without its secret must
    refuse everything). The prefix is matched without regard to case and surrounding
    whitespace is ignored; hex digests are compared lowercase; base64 exactly."""
    if not secret or not given:
        return False
    value = given.strip()
    if prefix:
        if value[: len(prefix)].lower() != prefix.lower():
            return False
        value = value[len(prefix) :]
    if encoding == "hex":
        return constant_time_equal(hmac_sha256_hex(secret, message), value.lower())
    return constant_time_equal(hmac_sha256_base64(secret, message), value)


def timestamp_fresh(
    timestamp: str | int | float | None, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> bool:
    """Whether ``timestamp`` (unix seconds, as a header gives it) is within ``tolerance``
    seconds of ``now`` (default: this machine's clock), either side: an old request replayed
    later, or a forged one from the future, is refused."""
    if timestamp is None or isinstance(timestamp, bool):
        return False
    try:
        t = float(timestamp)
    except ValueError:
        return False
    if not math.isfinite(t):
        return False
    return abs((time.time() if now is None else now) - t) <= tolerance


def dot_joined(timestamp: str, body: bytes) -> bytes:
    """``<timestamp>.<body>`` (Stripe's signed payload)."""
    return timestamp.encode("ascii") + b"." + body


def verify_timestamped(
    secret: str | bytes,
    timestamp: str | None,
    body: bytes,
    given: str | None,
    *,
    signed: Callable[[str, bytes], bytes] = dot_joined,
    prefix: str = "",
    encoding: Encoding = "hex",
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """A signature over ``signed(timestamp, body)`` whose timestamp is fresh. Slack's:
    ``signed=lambda t, b: b"v0:" + t.encode() + b":" + b, prefix="v0="``; Mailgun's:
    ``signed=lambda t, token: t.encode() + token`` with the token as ``body``.
    The MAC is checked even for a stale timestamp so both refusals take the same time."""
    if not timestamp or not timestamp.isascii():
        return False
    mac_ok = verify_hmac_sha256(secret, signed(timestamp, body), given, prefix=prefix, encoding=encoding)
    return timestamp_fresh(timestamp, tolerance=tolerance, now=now) and mac_ok


def secret_list(value: list[str] | str) -> list[str]:
    """The secrets a rotation key names (``extra_auth_tokens``, ``extra_app_secrets`` …): a TOML
    list, or one string of comma-separated secrets, so an environment variable or a secret file
    (``RELAYDESK_…_FILE``) can set it too. Empty entries are dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item.strip()]


# Rotation (the ``extra_*`` companions): one secret signs, the others are accepted too. Every
# site checks them all through these two, so none stops at the first that matches (the time
# taken would tell which secret an attacker's guess is near) and none takes an empty secret (an
# unset ``extra_*`` entry would let anyone sign with the empty key).


def first_match(secrets: Iterable[Secret], check: Callable[[Secret], bool]) -> int | None:
    """The index in ``secrets`` of the first one ``check`` holds for (None: none does).
    ``check`` runs for every non-empty secret, also after one matched; empty ones are skipped."""
    found: int | None = None
    for index, secret in enumerate(secrets):
        if not secret:
            continue
        if check(secret) and found is None:
            found = index
    return found


def open_with_any(
    secrets: Iterable[Secret],
    open_: Callable[[Secret], Opened | None],
    refusals: tuple[type[Exception], ...] = (),
) -> Opened | None:
    """What ``open_`` gives for the first secret that opens (None, or one of ``refusals``
    raised: not this secret), or None when none does. Every non-empty secret is tried, also
    after one opened; empty ones are skipped. An opened value may be falsy (``b""``): test the
    result with ``is None``."""
    found: Opened | None = None
    for secret in secrets:
        if not secret:
            continue
        try:
            opened = open_(secret)
        except refusals:
            continue
        if found is None:
            found = opened
    return found
