"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.

Always computed over the raw bytes as received: Meta escapes non-ASCII as ``\\uXXXX`` and any
re-serialisation changes the bytes.
"""

from __future__ import annotations

from connectors.sdk.signatures import sign as sign_hmac_sha256
from connectors.sdk.signatures import verify_hmac_sha256

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value Meta sends for ``body``."""
    return sign_hmac_sha256(secret, body, prefix=PREFIX)


def valid(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is Meta's signature of ``body`` (constant-time comparison)."""
    return verify_hmac_sha256(secret, body, header, prefix=PREFIX)
