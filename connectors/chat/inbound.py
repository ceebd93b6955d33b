"""Visitor messages: ``POST /messages`` and socket messages go one path, ``Inbound.accept``:
validate (size, rate limit), publish with the runtime's publisher (``Nats-Msg-Id`` dedupe,
success only after the JetStream ack), then store the frame in the history stream."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aiohttp import web

from connectors.sdk import Malformed, ProviderRequest, TooLarge, Unauthentic, Unavailable, utcnow
from connectors.sdk.metrics import Metrics
from connectors.sdk.publish import InboundPublisher
from events.model import Channel, InboundMessage
from events.text import blank

from . import tokens
from .history import HistoryUnavailable
from .language import language_hints
from .origins import cors_headers
from .part import ChatPart, Shared
from .ratelimit import RateLimited, RateLimiter, Refusals
from .settings import session_secrets


def bearer_claims(request: ProviderRequest, secret: str | Sequence[str]) -> tokens.SessionClaims:
    """The session of ``Authorization: Bearer <session token>``; ``Unauthentic`` otherwise."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthentic("session token missing (Authorization: Bearer)")
    try:
        return tokens.verify_token(secret, token.strip())
    except tokens.TokenError as err:
        raise Unauthentic(str(err)) from err


class Inbound(ChatPart):
    """Visitor messages, from ``POST /messages`` and sockets."""

    publisher: InboundPublisher  # from the connector's attach(): the runtime's inbound publisher
    metrics: Metrics

    def __init__(self, shared: Shared, limiter: RateLimiter, *, channel: Channel, provider: str) -> None:
        super().__init__(shared)
        self.limiter = limiter
        self.refusals = Refusals()
        self.channel = channel
        self.provider = provider

    def message(self, claims: tokens.SessionClaims, body: object) -> InboundMessage:
        """The visitor's message as an ``InboundMessage``; ``Malformed``, ``TooLarge`` or
        ``RateLimited`` otherwise (the rate limit counts only messages that pass the checks)."""
        if not isinstance(body, dict):
            raise Malformed("body must be a JSON object")
        client_msg_id, text = body.get("client_msg_id"), body.get("text")
        if not isinstance(client_msg_id, str) or not tokens.CLIENT_MSG_ID.fullmatch(client_msg_id):
            raise Malformed("client_msg_id must be 1-64 characters of A-Z a-z 0-9 _ . : -")
        if not isinstance(text, str) or blank(text):
            raise Malformed("text must be a string with something visible in it")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate ("\ud800"): was a crash answered "send it again"
            raise Malformed("text is not Unicode text (it holds a lone UTF-16 surrogate)") from None
        if size > self.settings.max_message_bytes:
            raise TooLarge(f"message over {self.settings.max_message_bytes} bytes")
        wait = self.limiter.take(claims.address)
        if wait:
            raise RateLimited(
                f"rate limit: {self.settings.rate_limit_per_minute} messages per minute; retry in {wait:.1f} s"
            )
        metadata = {"client_msg_id": client_msg_id, "visitor": claims.address.partition(":")[0]}
        if claims.verified_email:
            metadata["verified_email"] = claims.verified_email
        # The widget's browser/page language: priors for short messages (invalid tags dropped).
        metadata.update(language_hints(body))
        return InboundMessage(
            at=utcnow(),
            channel=self.channel,
            provider=self.provider,
            provider_message_id=tokens.provider_message_id(claims.address, client_msg_id),
            sender=claims.address,
            text=text,
            sender_name=claims.name or None,
            metadata=metadata,
        )

    async def accept(
        self, claims: tokens.SessionClaims, body: object, origin: str = "", path: str = "/messages"
    ) -> tuple[str, int]:
        """Validate, publish (success only after the JetStream ack; ``Nats-Msg-Id`` makes a resend
        one event), then store the frame in the history: ``(client_msg_id, seq)``. Raises the
        SDK's errors (``Unavailable`` when either NATS step fails: the client resends)."""
        message = self.message(claims, body)
        self.metrics.inc("received")
        [item] = await self.publisher.publish([message])
        self.metrics.inc("duplicates" if item.duplicate else "published")
        # Per message: debug (the counters carry the totals), as in every connector.
        self.log.debug(
            "inbound.duplicate" if item.duplicate else "inbound.published",
            path=path,
            provider_message_id=message.provider_message_id,
            seq=item.seq,
        )
        client_msg_id = message.metadata["client_msg_id"]
        try:
            frame, _ = await self.history.append(claims.address, "message", client_msg_id, message.text, origin=origin)
        except HistoryUnavailable as err:
            raise Unavailable("message history unavailable; send it again") from err
        return client_msg_id, frame.seq

    def refused(self, address: str, err: RateLimited, path: str) -> float:
        """Count a rate-limited message and say it (a warning once a minute per visitor); the
        seconds until the visitor may send again (at least 1)."""
        self.metrics.reject("rate_limit")
        say = self.log.warning if self.refusals.worth_a_warning(address) else self.log.debug
        say("inbound.rate_limited", path=path, status=err.status, reason=err.reason)
        return max(self.limiter.take_wait(address), 1.0)

    async def post_message(self, request: ProviderRequest) -> web.StreamResponse:
        """``POST /messages``: the SDK has verified the token; its error mapping and metrics
        (403/400/413/503) apply to what ``accept`` raises. A rate-limited message is 429 as a
        refused session is: ``Retry-After`` and ``retry_after``, with the CORS headers, or the
        widget's script sees a network error and sends again at once."""
        claims = bearer_claims(request, session_secrets(self.settings))
        try:
            client_msg_id, seq = await self.accept(claims, request.json())
        except RateLimited as err:
            retry = math.ceil(self.refused(claims.address, err, "/messages"))
            return web.json_response(
                {"error": err.reason, "retryable": True, "retry_after": retry},
                status=429,
                headers={**cors_headers(self.origins, request), "Retry-After": str(retry)},
            )
        return web.json_response(
            {"client_msg_id": client_msg_id, "seq": seq, "epoch": self.history.epoch},
            headers=cors_headers(self.origins, request),
        )
