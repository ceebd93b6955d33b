"""What a running sink serves over HTTP: the helpdesk's webhooks, ``/healthz``, ``/readyz`` and
``/metrics``, and the health they report (``SinkHttp``, a base of ``SinkRuntime``, which
services.sinks.sdk.runtime runs; the state it reads and sets is the runtime's).

A webhook is verified and handed to the sink; its refusals answer 4xx, passing failures 503
with ``Retry-After`` (the helpdesk retries), and credentials the helpdesk refuses make the sink
unready for a while (``webhook_auth_failed``) and have the settings read again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js.errors import InvalidKeyError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.sdk import http as connector_http
from services.bus.errors import NATS_ERRORS

from .base import Sink, WebhookRequest
from .errors import AuthFailed, Malformed, SinkError, Unauthentic
from .metrics import SINK_WEBHOOKS
from .reload import SettingsSource, reload_api


class SinkHttp:
    """The HTTP handlers and health of ``SinkRuntime`` (its base): they read the runtime's
    state and record what a webhook learnt of the helpdesk's credentials."""

    sink: Sink
    settings: SettingsSource | None
    nc: NATS
    log: structlog.typing.FilteringBoundLogger
    role: str
    instance_id: str
    position: int
    last_error: str
    auth_failed: bool
    stalled_on: int | None
    _webhook_auth_failed_at: float | None  # see ``webhook_auth_failed``
    _webhook_reloaded_at: float  # monotonic time of the last settings re-read for a webhook

    def health(self) -> dict[str, Any]:
        return {
            "sink": self.sink.name,
            "role": self.role,
            "instance": self.instance_id,
            "position": self.position,
            "nats": "connected" if self.nc.is_connected else "disconnected",
            "auth_failed": self.auth_failed or self.webhook_auth_failed,
            "stalled_on": self.stalled_on,
            "last_error": self.last_error,
        }

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        limit = self.sink.settings.max_body_bytes
        name = self.sink.name
        if request.content_length is not None and request.content_length > limit:
            SINK_WEBHOOKS.labels(sink=name, outcome="refused").inc()
            return web.json_response({"error": f"body over {limit} bytes"}, status=413)
        # A deadline on the body, as the connectors' ports have (connectors.sdk.http.BODY_TIMEOUT):
        # the idle timeout closes a connection whose head trickles in, not one whose body does, so
        # a head with Content-Length and then silence held a request open for as long as anyone
        # liked, before any signature was checked (found by a security audit).
        try:
            async with asyncio.timeout(connector_http.BODY_TIMEOUT):
                body = await request.read()
        except TimeoutError:
            SINK_WEBHOOKS.labels(sink=name, outcome="refused").inc()
            self.log.warning("sink.webhook_refused", status=408, reason="the body was too slow")
            timeout = connector_http.BODY_TIMEOUT
            return web.json_response({"error": f"the request body did not arrive within {timeout:g} s"}, status=408)
        except web.RequestPayloadError:  # a corrupt gzip or chunked body: the client's fault, not a 500
            SINK_WEBHOOKS.labels(sink=name, outcome="refused").inc()
            self.log.warning("sink.webhook_refused", status=400, reason="the body cannot be read")
            return web.json_response({"error": connector_http.unreadable_body(request)}, status=400)
        req = WebhookRequest(request.method, request.path, request.headers, body)
        try:
            self.sink.verify(req)
            answer = await self.sink.webhook(req)
        except (Unauthentic, Malformed) as err:
            SINK_WEBHOOKS.labels(sink=name, outcome="refused").inc()
            self.log.warning("sink.webhook_refused", status=err.status, reason=err.reason)
            return web.json_response({"error": err.reason}, status=err.status)
        except AuthFailed as err:
            # Found by an audit: a webhook met with refused credentials answered 503 and said
            # nothing else; readiness stayed green until a log event stalled the sink.
            SINK_WEBHOOKS.labels(sink=name, outcome="failed").inc()
            self._webhook_auth_failed_at, self.last_error = time.monotonic(), err.reason
            self.log.error(
                "sink.webhook_auth_failed",
                reason=err.reason,
                action=f"fix the {name} sink's API credentials; the helpdesk retries the webhook",
            )
            await self._reload_for_webhook()
            return web.json_response({"error": err.reason}, status=503, headers={"Retry-After": "5"})
        except SinkError as err:
            SINK_WEBHOOKS.labels(sink=name, outcome="failed").inc()
            self.log.warning("sink.webhook_failed", reason=err.reason)
            # The helpdesk retries a 5xx: nothing was done that a retry would do twice.
            return web.json_response({"error": err.reason}, status=503, headers={"Retry-After": "5"})
        except InvalidKeyError:
            # An id from the webhook that is no KV key (a sink that did not check it): the
            # request is at fault, not NATS; a 503 would have the helpdesk retry it forever.
            SINK_WEBHOOKS.labels(sink=name, outcome="refused").inc()
            self.log.warning("sink.webhook_refused", status=400, reason="an id in the body is not a valid key")
            return web.json_response({"error": "an id in the body is not a valid identifier"}, status=400)
        except NATS_ERRORS as err:
            SINK_WEBHOOKS.labels(sink=name, outcome="failed").inc()
            self.log.warning("sink.webhook_nats_unavailable", error=repr(err))
            return web.json_response({"error": "Relaydesk is unavailable"}, status=503, headers={"Retry-After": "5"})
        except Exception:
            SINK_WEBHOOKS.labels(sink=name, outcome="failed").inc()
            self.log.exception("sink.webhook_crashed")
            return web.json_response({"error": "internal error"}, status=500)
        outcome = "acted" if answer.get("acted") else "ignored"
        SINK_WEBHOOKS.labels(sink=name, outcome=outcome).inc()
        if self._webhook_auth_failed_at is not None:
            self._webhook_auth_failed_at = None
            self.log.info("sink.auth_recovered", by="webhook")
        return web.json_response(dict(answer))

    async def _reload_for_webhook(self) -> None:
        """Re-read the settings (a rotated token) at most once per ``auth_retry_pause``, so the
        helpdesk's retry of the webhook can pass without a restart or a log event to wait on."""
        now = time.monotonic()
        if self.settings is None or now - self._webhook_reloaded_at < self.sink.settings.auth_retry_pause:
            return
        self._webhook_reloaded_at = now
        await reload_api(self.sink, self.settings, self.log)

    @property
    def webhook_auth_failed(self) -> bool:
        """A webhook met refused credentials within the last ``auth_retry_pause`` (when the
        settings are read again), and no webhook or credentialled event worked since.

        It lapses by itself: readiness 503 takes the sink out of its load balancer (a
        Kubernetes Service), so the helpdesk's retry that was to clear it never arrived, and
        the sink stayed unready for good once the token was fixed (found by a security audit).
        Still refused, the next webhook says so again."""
        at = self._webhook_auth_failed_at
        return at is not None and time.monotonic() - at < self.sink.settings.auth_retry_pause

    async def _healthz(self, _request: web.Request) -> web.Response:
        parked = len(await self.sink.state.parked())
        return web.json_response({"status": "ok", "parked": parked, **self.health()})

    async def _readyz(self, _request: web.Request) -> web.Response:
        health = self.health()
        problem = ""
        if not self.nc.is_connected:
            problem = "NATS is not connected"
        elif self.auth_failed or self.webhook_auth_failed:
            problem = "the helpdesk refuses the sink's credentials"
        return web.json_response({"ready": not problem, "problem": problem, **health}, status=503 if problem else 200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
