"""The HTTP side of a connector: the provider's webhooks plus /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from events.model import InboundMessage

from .base import Connector, ProviderRequest, Route
from .errors import ConnectorError, Malformed, TooLarge, TooSlow, Unauthentic, Unavailable
from .metrics import Metrics, exposition, http_metrics
from .publish import InboundPublisher

log = structlog.get_logger("relaydesk.connector")

# The longest a request's body may take to arrive once its head has (s). The runtime's idle
# timeout closes a connection whose head trickles in, not one whose body does: a client that
# sent a head with Content-Length and then a byte now and then held its request, and a
# handler, for as long as it liked (found by an audit: still open after 50 s of silence).
# Twilio gives up after 15 s and Meta after 20 s, so a provider's body is never this slow.
BODY_TIMEOUT = 30.0

_REJECT_KIND: dict[type[ConnectorError], str] = {
    Unauthentic: "authenticity",
    Malformed: "malformed",
    TooLarge: "too_large",
    TooSlow: "too_slow",
}


def unreadable_body(request: web.Request) -> str:
    """Why a body the client sent cannot be read: a corrupt ``Content-Encoding`` (gzip,
    deflate) or a broken chunked transfer. The caller's fault, a 400; not a crash."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip()
    if encoding and encoding.lower() != "identity":
        return f"the request body cannot be decoded (Content-Encoding: {encoding[:40]})"
    return "the request body cannot be read"


def error_response(status: int, reason: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.json_response({"error": reason, **extra}, status=status, headers=headers)


async def read_request(request: web.Request, limit: int, timeout: float = BODY_TIMEOUT) -> ProviderRequest:
    """The request with its whole body, refusing more than ``limit`` bytes (413) and a body
    not all there within ``timeout`` seconds (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body over {limit} bytes")
    try:
        async with asyncio.timeout(timeout):
            body = await request.read()
    except TimeoutError as err:
        raise TooSlow(f"the request body did not arrive within {timeout:g} s") from err
    except web.HTTPRequestEntityTooLarge as err:  # also a gzip bomb: over the limit once inflated
        raise TooLarge(f"body over {limit} bytes") from err
    except web.RequestPayloadError as err:  # corrupt gzip/deflate: the client's fault, not ours
        raise Malformed(unreadable_body(request)) from err
    if len(body) > limit:
        raise TooLarge(f"body over {limit} bytes")
    return ProviderRequest(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        raw_path=request.raw_path,
        headers=request.headers,
        body=body,
        raw=request,
    )


class ConnectorApp:
    def __init__(
        self,
        connector: Connector,
        publisher: InboundPublisher,
        metrics: Metrics,
        health: Callable[[], dict[str, Any]],
    ) -> None:
        self.connector = connector
        self.publisher = publisher
        self.metrics = metrics
        self.health = health
        self.log = log.bind(connector=connector.name, channel=connector.channel)

    def build(self) -> web.Application:
        # Body size is enforced by read_request (JSON 413); aiohttp's own limit sits just above.
        app = web.Application(
            client_max_size=self.connector.settings.max_body_bytes + 1,
            middlewares=[http_metrics(f"connector {self.connector.name}")],
        )
        for route in self.connector.routes():
            if route.method == "GET":  # HEAD too, as aiohttp's add_get does: CDNs and uptime checks use it
                app.router.add_get(route.path, self._wrap(route))
            else:
                app.router.add_route(route.method, route.path, self._wrap(route))
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    def _wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        # Everything that does not depend on the request is looked up once, here.
        rlog = self.log.bind(path=route.path)
        limit = self.connector.settings.max_body_bytes
        body_timeout = BODY_TIMEOUT
        verify = self.connector.verify if route.verify else None
        handler = route.handler
        metrics = self.metrics

        async def handle(request: web.Request) -> web.StreamResponse:
            metrics.inc("requests")
            try:
                req = await read_request(request, limit, body_timeout)
                if verify is not None:
                    verify(req)
                if handler is not None:
                    return await handler(req)
                return await self._inbound(req, rlog)
            except (Unauthentic, Malformed, TooLarge, TooSlow) as err:
                self.metrics.reject(_REJECT_KIND[type(err)])
                rlog.warning("inbound.rejected", status=err.status, reason=err.reason)
                return error_response(err.status, err.reason)
            except Unavailable as err:
                self.metrics.inc("unavailable")
                rlog.warning("inbound.unavailable", reason=err.reason)
                return error_response(503, err.reason, retryable=True)
            except ConnectorError as err:
                # The caller's fault (4xx: rate limits, conflicts) is a warning; ours is an error.
                level = rlog.warning if err.status < 500 else rlog.error
                level("inbound.error", status=err.status, reason=err.reason)
                return error_response(err.status, err.reason)
            except Exception:
                rlog.exception("inbound.crashed")
                return error_response(500, "internal error", retryable=True)

        return handle

    async def _inbound(self, req: ProviderRequest, rlog: Any) -> web.StreamResponse:
        messages = list(self.connector.parse(req))
        for message in messages:
            self._check(message)
        metrics = self.metrics
        metrics.inc("received", len(messages))
        for item in await self.publisher.publish(messages):
            metrics.inc("duplicates" if item.duplicate else "published")
            # One line per message at debug (the hot path); the counters carry the totals.
            rlog.debug(
                "inbound.duplicate" if item.duplicate else "inbound.published",
                provider_message_id=item.message.provider_message_id,
                seq=item.seq,
                **item.trace_ids,
            )
        return self.connector.accepted(req, messages)

    def _check(self, message: InboundMessage) -> None:
        if not isinstance(message, InboundMessage):
            raise TypeError(f"{self.connector.name}.parse returned {type(message).__name__}, not InboundMessage")
        if message.channel != self.connector.channel:
            raise ValueError(f"{self.connector.name}.parse returned channel {message.channel!r}")
        if not message.provider_message_id:
            raise ValueError(f"{self.connector.name}.parse returned a message without provider_message_id")

    async def _metrics(self, _request: web.Request) -> web.Response:
        # The whole process's registry: this connector's counters and everything else it runs.
        return web.Response(body=exposition(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.health()})

    async def _readyz(self, _request: web.Request) -> web.Response:
        health = self.health()
        ready = health.get("nats") == "connected"
        return web.json_response({"ready": ready, **health}, status=200 if ready else 503)
