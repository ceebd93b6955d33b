"""Credentials of the web chat: visitor ids, session tokens and the site's identity JWT.

* **Visitor id**: 192 random bits (base64url), made by ``POST /sessions`` and kept by the widget
  in ``localStorage``; sent back to resume. It is a bearer secret of the browser, so it never
  appears in events: the chat *address* of an anonymous visitor is
  ``visitor:<HMAC-SHA256(session_secret, visitor id), 128 bits hex>``.
* **Session token**: ``v2.<base64url(nonce ‖ AES-256-GCM(JSON claims))>``, the key derived from
  ``session_secret``: sealed, not only signed, because the claims carry the visitor's name and
  verified email, and a token can end up in a proxy's or a browser tool's log. Valid
  ``token_ttl`` seconds (default 300). It is sent in the first WebSocket frame (never in a URL)
  or as ``Authorization: Bearer`` on ``POST /messages``. ``v1`` tokens (claims signed in clear,
  ``v1.<base64url(JSON)>.<base64url(HMAC)>``) are still accepted until they expire, so an
  upgrade ends no session; none is issued any more.
* **Identity JWT** (logged-in users): HS256, signed by the site's backend with
  ``identity_jwt_secret``, ``sub`` and ``exp`` required, lifetime at most one hour. A verified
  JWT makes the address ``user:<sub>``; ``name`` becomes the sender name and an ``email`` with
  ``email_verified: true`` is passed on as metadata ``verified_email`` (never used as the address).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.types import Options

from connectors.sdk.signatures import open_with_any

TOKEN_VERSION = "v2"
SIGNED_ONLY = "v1"  # accepted until expiry, never issued
NONCE_BYTES = 12
VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_JWT_LIFETIME = 3600
JWT_LEEWAY = 30
_SUBJECT_BAD = re.compile(r"[\x00-\x1f\x7f]")


class TokenError(ValueError):
    """A credential that does not hold; ``str(err)`` is a reason safe to show the client."""


def new_visitor_id() -> str:
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, label: bytes, data: bytes) -> bytes:
    return hmac.new(secret.encode(), label + b"\0" + data, hashlib.sha256).digest()


def visitor_address(secret: str, visitor_id: str) -> str:
    """The stable, non-secret chat address of an anonymous visitor."""
    return "visitor:" + _mac(secret, b"visitor-address", visitor_id.encode()).hex()[:32]


def user_address(subject: str) -> str:
    return "user:" + subject


def valid_address(address: str) -> bool:
    kind, _, rest = address.partition(":")
    if kind == "visitor":
        return bool(re.fullmatch(r"[0-9a-f]{32}", rest))
    if kind == "user":
        return 0 < len(rest) <= 256 and not _SUBJECT_BAD.search(rest)
    return False


def provider_message_id(address: str, client_msg_id: str) -> str:
    """Stable per (address, client_msg_id), opaque (it is logged and becomes ``Nats-Msg-Id``)."""
    return hashlib.sha256(f"{address}\n{client_msg_id}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class SessionClaims:
    address: str
    expires: int
    name: str = ""
    verified_email: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.address, "x": self.expires}
        if self.name:
            out["n"] = self.name
        if self.verified_email:
            out["m"] = self.verified_email
        return out


def _token_key(secret: str) -> AESGCM:
    return AESGCM(_mac(secret, b"session-token-key", b""))


def issue_token(secret: str, claims: SessionClaims) -> str:
    plain = json.dumps(claims.to_json(), separators=(",", ":")).encode()
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = _token_key(secret).encrypt(nonce, plain, TOKEN_VERSION.encode())
    return f"{TOKEN_VERSION}.{_b64(nonce + sealed)}"


@dataclass(frozen=True)
class _Read:
    """A session token's parts, before any secret is tried: v2 (sealed) or v1 (signed)."""

    version: str
    head: bytes  # v2: the nonce; v1: the text signed
    body: bytes  # v2: the sealed claims; v1: the claims
    mac: bytes = b""  # v1: the signature


def _read(token: str) -> _Read:
    """``TokenError`` for a token of no known shape: whatever the secret, it says the same."""
    parts = token.split(".")
    try:
        if parts[0] == TOKEN_VERSION and len(parts) == 2:
            data = _unb64(parts[1])
            if len(data) > NONCE_BYTES:
                return _Read(TOKEN_VERSION, data[:NONCE_BYTES], data[NONCE_BYTES:])
        elif parts[0] == SIGNED_ONLY and len(parts) == 3:
            mac = _unb64(parts[2])
            return _Read(SIGNED_ONLY, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[1]), mac)
    except ValueError as err:
        raise TokenError("session token malformed") from err
    raise TokenError("session token malformed")


def _claims_of(secret: str, read: _Read) -> bytes | None:
    """The JSON claims, if ``secret`` sealed (v2) or signed (v1) the token; None otherwise."""
    if read.version == TOKEN_VERSION:
        try:
            return _token_key(secret).decrypt(read.head, read.body, TOKEN_VERSION.encode())
        except InvalidTag:  # another secret, or altered
            return None
    return read.body if hmac.compare_digest(read.mac, _mac(secret, b"session-token", read.head)) else None


def verify_token(secret: str | Sequence[str], token: object, *, now: float | None = None) -> SessionClaims:
    """``secret``: one, or several (the first seals; the others are the old ones, still accepted)."""
    if not isinstance(token, str) or not token:
        raise TokenError("session token missing")
    read = _read(token)
    payload = open_with_any([secret] if isinstance(secret, str) else secret, lambda key: _claims_of(key, read))
    if payload is None:
        raise TokenError("session token signature invalid")
    try:
        raw = json.loads(payload)
        claims = SessionClaims(
            address=str(raw["a"]),
            expires=int(raw["x"]),
            name=str(raw.get("n", "")),
            verified_email=str(raw.get("m", "")),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise TokenError("session token malformed") from err
    if claims.expires <= (time.time() if now is None else now):
        raise TokenError("session token expired")
    return claims


@dataclass(frozen=True)
class Identity:
    subject: str
    name: str = ""
    verified_email: str = ""


def verify_identity_jwt(secret: str, token: object, *, audience: str = "", now: float | None = None) -> Identity:
    """The logged-in user the site's backend vouches for; ``TokenError`` with a reason otherwise."""
    if not secret:
        raise TokenError("identity tokens are not enabled on this chat server")
    if not isinstance(token, str) or not token:
        raise TokenError("identity token malformed")
    options: Options = {"require": ["exp", "sub"], "verify_aud": bool(audience)}
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience or None,
            options=options,
            leeway=JWT_LEEWAY,
        )
    except jwt.ExpiredSignatureError as err:
        raise TokenError("identity token expired") from err
    except jwt.InvalidSignatureError as err:
        raise TokenError("identity token signature invalid") from err
    except jwt.MissingRequiredClaimError as err:
        raise TokenError(f"identity token lacks the {err.claim!r} claim") from err
    except jwt.InvalidAlgorithmError as err:
        raise TokenError("identity token algorithm not allowed (HS256 only)") from err
    except jwt.InvalidAudienceError as err:
        raise TokenError("identity token audience invalid") from err
    except jwt.ImmatureSignatureError as err:
        raise TokenError("identity token not valid yet") from err
    except jwt.PyJWTError as err:
        raise TokenError("identity token malformed") from err
    exp = claims["exp"]
    issued = claims.get("iat")
    current = time.time() if now is None else now
    start = issued if isinstance(issued, (int, float)) else current
    if not isinstance(exp, (int, float)) or exp - start > MAX_JWT_LIFETIME + JWT_LEEWAY:
        raise TokenError("identity token lifetime over 1 h")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 256 or _SUBJECT_BAD.search(subject):
        raise TokenError("identity token subject invalid")
    name = claims.get("name")
    email = claims.get("email")
    verified = email if isinstance(email, str) and "@" in email and claims.get("email_verified") is True else ""
    return Identity(subject=subject, name=name[:200] if isinstance(name, str) else "", verified_email=verified)
