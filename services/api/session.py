"""Sign in once per browser: the console's token exchanged for an HttpOnly session cookie.

``POST /v1/session`` with ``{"token"}`` checks the token exactly as a bearer header would be
checked (the API's own ``authenticate`` middleware) and answers with a cookie holding the
token sealed (AES-GCM) under a key derived from the API's signing key, with an expiry and a
session id inside the seal. The session lives in the cookie (only its end is stored), so it
survives an API restart and works on every API replica; rotating the signing key ends every
session (as it ends every agent token).

``cookie_session`` runs before authentication: a request without an ``Authorization`` header
but with a valid session cookie is cloned with ``Authorization: Bearer <token>``, so every
existing rule (who is calling, what they may reach, token revocation, the live stream's
revocation check) applies unchanged. Revoking the agent token ends its sessions at once.

CSRF: a browser attaches the cookie to cross-site requests too (SameSite=Lax still allows
top-level navigations). So a cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE)
must come from the console itself: an ``Origin`` naming this host, or the ``X-Relaydesk-CSRF``
header (a cross-site page cannot set a custom header without a CORS preflight, which this API
never grants). Otherwise 403, nothing done. Bearer-token callers are not affected.

``DELETE /v1/session`` expires the cookie in the browser and ends the session on the server:
each cookie carries a random session id, and signing out records it as ended (a key in the
API's KV bucket ``rd_idempotency``, whose day-long TTL outlives any session), which every API
replica checks on every cookie request. Found by an audit: a copy of the cookie taken before
logout (a shared desk, a proxy or an extension that saw it) kept working for 12 hours. Cookies
sealed before session ids existed hold until they expire. A live stream opened with a copy
before the logout runs until it reconnects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from multidict import CIMultiDict
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from connectors.sdk.signatures import open_with_any
from events.skips import count_skip
from services.api.auth import AGENT, Handler
from services.api.common import ACTOR, Body, json_error, ok, read_body
from services.bus.errors import NATS_ERRORS

log = structlog.get_logger(__name__)

COOKIE = "relaydesk_session"
CSRF_HEADER = "X-Relaydesk-CSRF"
# One working day; a longer shift signs in again.
SESSION_SECONDS = 12 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SEAL_CONTEXT = b"relaydesk console session v1"
# Where the token is checked: any path that needs a token (``/v1/session`` itself is public).
PROBE_PATH = "/v1/session/probe"

SESSIONS_REFUSED = Counter(
    "relaydesk_console_sessions_refused_total",
    "Console session cookies or sign-ins refused",
    ["reason"],  # unreadable (bad seal or expired), signed_out, cross_site, invalid_token, refused_agent
)


class SessionBody(Body):
    token: str


class SessionInfo(msgspec.Struct, kw_only=True):
    actor: str
    expires_at: str


class SignedOut(msgspec.Struct, kw_only=True):
    signed_out: bool


class SessionSealer:
    """Seals a token and its expiry into a cookie value; opens it again (None: not ours, or
    expired). The key is derived from the API's signing key, distinct from its other uses."""

    def __init__(self, signing_key: bytes, *extra: bytes, clock: Callable[[], float] = time.time) -> None:
        self.aead = AESGCM(hmac.new(signing_key, SEAL_CONTEXT, hashlib.sha256).digest())
        # [api] extra_signing_keys: a session sealed with the old key stays open while it is listed.
        # By the key they derive from, so an empty one is never tried (open_with_any skips it).
        self.opening = {
            key: AESGCM(hmac.new(key, SEAL_CONTEXT, hashlib.sha256).digest()) for key in (signing_key, *extra)
        }
        self.clock = clock

    def seal(self, token: str, lifetime: float = SESSION_SECONDS) -> tuple[str, float]:
        expires = self.clock() + lifetime
        nonce = os.urandom(12)
        session_id = os.urandom(16).hex()
        payload = msgspec.json.encode([token, expires, session_id])
        sealed = nonce + self.aead.encrypt(nonce, payload, SEAL_CONTEXT)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("="), expires

    def open(self, value: str) -> Opened | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._decrypt(raw)
            if plain is None:
                return None
            token, expires, *rest = msgspec.json.decode(plain)
        except (InvalidTag, ValueError, TypeError, binascii.Error, msgspec.DecodeError):
            return None
        if not isinstance(token, str) or not isinstance(expires, (int, float)) or expires <= self.clock():
            return None
        session_id = rest[0] if rest and isinstance(rest[0], str) else ""  # "": sealed before ids
        return Opened(token, session_id)

    def _decrypt(self, raw: bytes) -> bytes | None:
        opening = self.opening
        return open_with_any(opening, lambda key: opening[key].decrypt(raw[:12], raw[12:], SEAL_CONTEXT), (InvalidTag,))


@dataclass(frozen=True, slots=True)
class Opened:
    token: str
    session_id: str  # "" for a cookie sealed before sessions had ids (it holds until it expires)


class SessionsEnded:
    """The sessions signed out, as keys of the API's KV bucket (shared by its replicas); a key
    lives the bucket's TTL (a day), longer than any session."""

    def __init__(self, bucket: Callable[[], Awaitable[KeyValue]]) -> None:
        self._open_bucket = bucket
        self._bucket: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        if self._bucket is None:  # looked up once (a stream info request), then kept
            self._bucket = await self._open_bucket()
        return self._bucket

    @staticmethod
    def key(session_id: str) -> str:
        return f"session_ended.{session_id}"

    async def end(self, session_id: str) -> None:
        await (await self.bucket()).put(self.key(session_id), b"1")

    async def ended(self, session_id: str) -> bool:
        try:
            await (await self.bucket()).get(self.key(session_id))
        except KeyNotFoundError:
            return False
        return True


def _is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the API itself speaks plain HTTP.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _same_origin(request: web.Request) -> bool | None:
    """True: ``Origin`` names this host; False: it names another; None: no Origin sent."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    return urlsplit(origin).netloc.lower() == request.host.lower()


def _from_console(request: web.Request) -> bool:
    """Whether an unsafe request may ride on the cookie (see the module docstring)."""
    return _same_origin(request) is True or (CSRF_HEADER in request.headers and _same_origin(request) is None)


def _refuse_cross_site(request: web.Request) -> web.Response:
    SESSIONS_REFUSED.labels("cross_site").inc()
    log.warning(
        "api.session_cross_site_refused",
        method=request.method,
        path=request.path,
        origin=request.headers.get("Origin"),
    )
    return json_error(
        403,
        "cross-site request refused: a request signed in by the session cookie must come from the console",
        hint=f"send Origin of this host or the {CSRF_HEADER} header, or use an Authorization header",
    )


def _forget(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def cookie_session(sealer: SessionSealer, ended: SessionsEnded) -> Middleware:
    """Turns a valid session cookie into the bearer identity (before ``authenticate``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        value = request.cookies.get(COOKIE)
        if value is None or "Authorization" in request.headers or request.path == "/v1/session":
            return await handler(request)
        opened = sealer.open(value)
        why = "unreadable" if opened is None else None
        if opened is not None and opened.session_id:
            try:
                if await ended.ended(opened.session_id):
                    why = "signed_out"
            except NATS_ERRORS as err:  # NATS away: the session cannot be vouched for
                log.warning("api.session_unchecked", path=request.path, error=repr(err))
                count_skip("api.session_check")
                return json_error(503, "cannot check the session now; try again", retryable=True)
        if opened is None or why is not None:
            # Expired, sealed with a former key, or signed out: as if signed out; the answer forgets it.
            SESSIONS_REFUSED.labels(why).inc()
            log.info("api.session_refused", reason=why, path=request.path)
            response = await handler(request)
            if not response.prepared:
                _forget(response)
            return response
        if request.method in UNSAFE_METHODS and not _from_console(request):
            return _refuse_cross_site(request)
        headers = CIMultiDict(request.headers)
        headers["Authorization"] = f"Bearer {opened.token}"
        response = await handler(request.clone(headers=headers))
        if response.status == 401 and not response.prepared:
            _forget(response)  # the token was revoked: the session ends with it
        return response

    return middleware


def routes(
    sealer: SessionSealer,
    ended: SessionsEnded,
    authenticate: Middleware,
    refused: Callable[[str], str | None] = lambda _agent: None,
) -> web.RouteTableDef:
    """``authenticate``: the app's own middleware, so a sign-in checks what a bearer would;
    ``refused``: why an agent's tokens are refused whatever they ask (deactivated), if so."""
    r = web.RouteTableDef()

    @r.post("/v1/session")
    async def sign_in(request: web.Request) -> web.StreamResponse:
        # A forged sign-in would put the victim in the attacker's session (login CSRF).
        if _same_origin(request) is False:
            return _refuse_cross_site(request)
        # Cloned before the body is read (aiohttp refuses to clone a request read already).
        unchecked = request.clone(rel_url=PROBE_PATH)
        body = await read_body(request, SessionBody)
        token = body.token.strip()
        actor: list[str] = []

        why: list[str] = []

        async def identified(checked: web.Request) -> web.StreamResponse:
            actor.append(checked[ACTOR])
            agent_id = checked.get(AGENT)
            if agent_id is not None and (reason := refused(agent_id)):
                why.append(reason)
            return web.Response(status=204)

        probe = unchecked.clone(headers={"Authorization": f"Bearer {token}"})
        answer = await authenticate(probe, identified)
        if not actor:
            SESSIONS_REFUSED.labels("invalid_token").inc()
            log.info("api.session_refused", status=answer.status)
            return json_error(401, "invalid token")
        if why:  # every call would be refused: no session that only fails
            SESSIONS_REFUSED.labels("refused_agent").inc()
            log.info("api.session_refused", actor=actor[0], reason=why[0])
            return json_error(403, why[0])
        value, expires = sealer.seal(token)
        info = SessionInfo(actor=actor[0], expires_at=datetime.fromtimestamp(expires, UTC).isoformat())
        response = ok(info)
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=_is_https(request),
        )
        log.info("api.session_started", actor=actor[0])
        return response

    @r.delete("/v1/session")
    async def sign_out(request: web.Request) -> web.StreamResponse:
        if not _from_console(request):
            return _refuse_cross_site(request)
        value = request.cookies.get(COOKIE)
        opened = sealer.open(value) if value is not None else None
        if opened is not None and opened.session_id:
            try:
                await ended.end(opened.session_id)
            except NATS_ERRORS as err:  # the cookie stays: signing out again may end it
                log.warning("api.session_not_ended", error=repr(err))
                count_skip("api.session_end")
                return json_error(503, "could not end the session on the server; sign out again", retryable=True)
        response = ok(SignedOut(signed_out=True))
        _forget(response)
        log.info("api.session_ended")
        return response

    return r
