"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.

Always computed over the raw bytes as received: Meta escapes non-ASCII as ``\\uXXXX`` and any
re-serialisation changes the bytes.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value Meta sends for ``body``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def valid(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is Meta's signature of ``body`` (constant-time comparison)."""
    if not secret or not header:
        return False
    given = header.strip()
    if given[: len(PREFIX)].lower() != PREFIX:
        return False
    digest = given[len(PREFIX) :].lower()
    if len(digest) != 64:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest.encode("ascii", "replace"), expected.encode("ascii"))
