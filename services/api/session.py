"""Sign in once per browser: the console's token exchanged for an HttpOnly session cookie.

``POST /v1/session`` with ``{"token"}`` checks the token exactly as a bearer header would be
checked (the API's own ``authenticate`` middleware) and answers with a cookie holding the
token sealed (AES-GCM) under a key derived from the API's signing key, with an expiry inside
the seal. Nothing is stored server-side, so a session survives an API restart and works on
every API replica; rotating the signing key ends every session (as it ends every agent token).

``cookie_session`` runs before authentication: a request without an ``Authorization`` header
but with a valid session cookie is cloned with ``Authorization: Bearer <token>``, so every
existing rule (who is calling, what they may reach, token revocation, the live stream's
revocation check) applies unchanged. Revoking the agent token ends its sessions at once.

CSRF: a browser attaches the cookie to cross-site requests too (SameSite=Lax still allows
top-level navigations). So a cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE)
must come from the console itself: an ``Origin`` naming this host, or the ``X-Relaydesk-CSRF``
header (a cross-site page cannot set a custom header without a CORS preflight, which this API
never grants). Otherwise 403, nothing done. Bearer-token callers are not affected.

``DELETE /v1/session`` expires the cookie in the browser. The session is the sealed token, so
a copy of the cookie taken before logout (HttpOnly keeps it from scripts) stays valid until
its expiry (``SESSION_SECONDS``) or until the token is revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from multidict import CIMultiDict
from prometheus_client import Counter

from services.api.auth import AGENT, Handler
from services.api.common import ACTOR, Body, json_error, ok, read_body

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
    ["reason"],  # unreadable (bad seal or expired), cross_site, invalid_token, refused_agent
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

    def __init__(self, signing_key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.aead = AESGCM(hmac.new(signing_key, SEAL_CONTEXT, hashlib.sha256).digest())
        self.clock = clock

    def seal(self, token: str, lifetime: float = SESSION_SECONDS) -> tuple[str, float]:
        expires = self.clock() + lifetime
        nonce = os.urandom(12)
        sealed = nonce + self.aead.encrypt(nonce, msgspec.json.encode([token, expires]), SEAL_CONTEXT)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("="), expires

    def open(self, value: str) -> str | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            token, expires = msgspec.json.decode(self.aead.decrypt(raw[:12], raw[12:], SEAL_CONTEXT))
        except (InvalidTag, ValueError, binascii.Error, msgspec.DecodeError):
            return None
        if not isinstance(token, str) or not isinstance(expires, (int, float)) or expires <= self.clock():
            return None
        return token


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


def cookie_session(sealer: SessionSealer) -> Middleware:
    """Turns a valid session cookie into the bearer identity (before ``authenticate``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        value = request.cookies.get(COOKIE)
        if value is None or "Authorization" in request.headers or request.path == "/v1/session":
            return await handler(request)
        token = sealer.open(value)
        if token is None:
            # Expired or sealed with a former key: as if signed out; the answer forgets it.
            SESSIONS_REFUSED.labels("unreadable").inc()
            log.info("api.session_unreadable", path=request.path)
            response = await handler(request)
            if not response.prepared:
                _forget(response)
            return response
        if request.method in UNSAFE_METHODS and not _from_console(request):
            return _refuse_cross_site(request)
        headers = CIMultiDict(request.headers)
        headers["Authorization"] = f"Bearer {token}"
        response = await handler(request.clone(headers=headers))
        if response.status == 401 and not response.prepared:
            _forget(response)  # the token was revoked: the session ends with it
        return response

    return middleware


def routes(
    sealer: SessionSealer, authenticate: Middleware, refused: Callable[[str], str | None] = lambda _agent: None
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
        response = ok(SignedOut(signed_out=True))
        _forget(response)
        log.info("api.session_ended")
        return response

    return r
