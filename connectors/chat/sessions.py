"""The pages' side of the HTTP API: ``POST /sessions`` (a session token for a visitor or a
logged-in user), CORS preflights, the widget script and the demo page."""

from __future__ import annotations

import hmac
import json
import math
import secrets
import time
from importlib import resources

from aiohttp import web

from connectors.sdk import Malformed, ProviderRequest
from connectors.sdk.metrics import Metrics

from . import tokens
from .history import HistoryUnavailable
from .origins import cors_headers, origin_allowed, refused
from .part import ChatPart, Shared
from .ratelimit import NewVisitorLimit, RateLimiter
from .settings import address_secret


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def client_address(request: ProviderRequest, header: str) -> str:
    """Who is asking, for the new-visitor limit: the last value of ``header`` (what the closest
    proxy appended: earlier ones the client may have written itself), else the peer address."""
    if header:
        values = [v.strip() for v in ",".join(request.headers.getall(header, [])).split(",") if v.strip()]
        if values:
            return values[-1]
    remote = request.raw.remote if request.raw is not None else None
    return remote or "unknown"


class SessionEndpoints(ChatPart):
    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.new_visitors = NewVisitorLimit(self.settings.new_visitors_per_minute)
        # Any session, a returning visitor's too: each is a NATS read (found by a security audit:
        # a known visitor_id, sent again and again, was an unlimited stream of reads).
        self.sessions = RateLimiter(self.settings.sessions_per_minute)
        self.metrics: Metrics | None = None  # the runtime's, once attached

    async def preflight(self, request: ProviderRequest) -> web.StreamResponse:
        headers = cors_headers(self.origins, request)
        if not headers:
            return refused()
        return web.Response(status=204, headers=headers)

    async def widget(self, _request: ProviderRequest) -> web.StreamResponse:
        return web.Response(
            text=_static("widget.js"),
            content_type="application/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def demo(self, _request: ProviderRequest) -> web.StreamResponse:
        # The widget key is public: every embedding page carries it.
        key = json.dumps(self.settings.widget_key).replace("<", "\\u003c")
        nonce = secrets.token_urlsafe(16)
        page = _static("index.html").replace("{{WIDGET_KEY}}", key).replace("{{NONCE}}", nonce)
        # As the console's: found by an audit, the demo page sent no CSP and could be framed.
        # The widget styles itself from its script (a <style> it adds): style-src allows that.
        headers = {
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
                "connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=headers)

    async def create(self, request: ProviderRequest) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if not origin or not origin_allowed(self.origins, origin, request):
            self.log.warning("session.rejected", reason="origin not allowed")
            return refused()
        cors = cors_headers(self.origins, request)

        def fail(status: int, reason: str) -> web.Response:
            self.log.warning("session.rejected", status=status, reason=reason)
            return web.json_response({"error": reason}, status=status, headers=cors)

        def too_many(wait: float, limit: str, what: str, per_minute: int) -> web.Response:
            if self.metrics is not None:
                self.metrics.reject(limit)
            self.log.warning("session.rejected", status=429, reason=f"{what} per minute from one address")
            retry = max(1, math.ceil(wait))
            return web.json_response(
                {
                    "error": f"too many {what} from one address: {per_minute} a minute; retry in {retry} s",
                    "retryable": True,
                    "retry_after": retry,
                },
                status=429,
                headers={**cors, "Retry-After": str(retry)},
            )

        try:
            body = request.json()
        except Malformed as err:
            return fail(400, err.reason)
        if not isinstance(body, dict):
            return fail(400, "body must be a JSON object")
        key = body.get("widget_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.settings.widget_key.encode()):
            return fail(403, "unknown widget key")
        client = client_address(request, self.settings.client_address_header)
        if wait := self.sessions.take(client):
            return too_many(wait, "session_limit", "sessions", self.settings.sessions_per_minute)
        visitor_id = body.get("visitor_id")
        if visitor_id is None or visitor_id == "":
            visitor_id = tokens.new_visitor_id()
        elif not isinstance(visitor_id, str) or not tokens.VISITOR_ID.fullmatch(visitor_id):
            return fail(400, "visitor_id malformed")
        identity_token = body.get("identity_token")
        name = verified_email = ""
        if identity_token not in (None, ""):
            try:
                identity = tokens.verify_identity_jwt(
                    self.settings.identity_jwt_secret, identity_token, audience=self.settings.identity_jwt_audience
                )
            except tokens.TokenError as err:
                return fail(401, str(err))
            address = tokens.user_address(identity.subject)
            name, verified_email = identity.name, identity.verified_email
        else:
            address = tokens.visitor_address(address_secret(self.settings), visitor_id)
        try:
            last_seq = await self.history.last_seq(address)
        except HistoryUnavailable as err:
            self.log.warning("session.unavailable", reason=str(err))
            return web.json_response(
                {"error": "chat history unavailable", "retryable": True},
                status=503,
                headers={**cors, "Retry-After": "5"},
            )
        if last_seq == 0 and (wait := self.new_visitors.take(client, address)):
            return too_many(wait, "new_visitor_limit", "new visitors", self.settings.new_visitors_per_minute)
        expires = int(time.time() + self.settings.token_ttl)
        claims = tokens.SessionClaims(address, expires, name, verified_email)
        token = tokens.issue_token(self.settings.session_secret, claims)
        self.log.info("session.created", identified=address.startswith("user:"))
        return web.json_response(
            {
                "visitor_id": visitor_id,
                "token": token,
                "expires_in": int(self.settings.token_ttl),
                "expires_at": expires,
                "identified": address.startswith("user:"),
                "epoch": self.history.epoch,
                "last_seq": last_seq,
                "ws_path": "/ws",
                "max_message_bytes": self.settings.max_message_bytes,
                "rate_limit_per_minute": self.settings.rate_limit_per_minute,
            },
            headers={**cors, "Cache-Control": "no-store"},
        )
