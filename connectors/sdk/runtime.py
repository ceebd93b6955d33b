"""Run one connector: its HTTP server and its outbound worker, on a NATS connection it is given."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from nats.aio.client import Client as NATS

from .base import Connector
from .errors import ConnectorConfigError
from .http import ConnectorApp
from .metrics import Metrics
from .outbound import OutboundWorker
from .publish import InboundPublisher
from .registry import name_problem

log = structlog.get_logger("relaydesk.connector")


# A connection with no request under way (none yet, between two, or a request's head still
# coming in a byte at a time) is closed after this (s). aiohttp's default is 3,630 s: a hostile
# client held 200 silent connections (and any number it liked) to the public chat port for an
# hour each (found by the hostile-client audit, 2026-12-07). Sockets and requests being served
# are not idle.
IDLE_CONNECTION_TIMEOUT = 30.0


class ConnectorRuntime:
    """``await start()`` serves the connector's routes on ``settings.host:settings.port``
    (port 0: any free port) and starts the outbound worker (unless ``settings.outbound`` is
    false); it returns the URLs it listens on. ``await stop()`` stops taking requests, lets
    in-flight ones finish, stops the worker after the reply it is delivering, and closes the
    connector's HTTP client. The NATS connection belongs to the caller and stays open."""

    def __init__(self, connector: Connector, nc: NATS) -> None:
        for kind in ("name", "channel"):
            if problem := name_problem(kind, getattr(connector, kind, None)):
                # Else a dot failed every webhook 500 (no subject token) and an uppercase letter had
                # every message parked by intake (events.model.Channel): said at start instead.
                raise ConnectorConfigError(f"{type(connector).__name__}: {problem}")
        self.connector = connector
        self.nc = nc
        self.js = nc.jetstream()
        self.metrics = Metrics(connector.name, connector.channel)
        self.publisher = InboundPublisher(nc, ack_timeout=connector.settings.ack_timeout)
        self.worker: OutboundWorker | None = None
        self.urls: list[str] = []
        self._runner: web.AppRunner | None = None
        self.log = log.bind(connector=connector.name, channel=connector.channel)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "connector": self.connector.name,
            "channel": self.connector.channel,
            "nats": "connected" if self.nc.is_connected else "disconnected",
            "counters": self.metrics.snapshot(),
        }
        if self.worker is not None:
            out["outbound"] = self.worker.health()
        return out

    async def start(self) -> list[str]:
        if self._runner is not None:
            return self.urls
        s = self.connector.settings
        await self.connector.open_http()
        self.connector.attach(self.nc, self.publisher, self.metrics)
        try:
            await self.connector.startup()
        except BaseException:
            await self.connector.close_http()
            raise
        app = ConnectorApp(self.connector, self.publisher, self.metrics, self.health).build()
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=IDLE_CONNECTION_TIMEOUT,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, s.host, s.port)
            await site.start()
        except OSError as err:
            await runner.cleanup()
            await self._close_connector()
            name = self.connector.name
            raise SystemExit(
                f"connector {name} cannot listen on {s.host}:{s.port}: {err.strerror} (choose another"
                f" port: [connectors.{name}] port or RELAYDESK_CONNECTOR_{name.upper()}_PORT)"
            ) from err
        except BaseException:
            await runner.cleanup()
            await self._close_connector()
            raise
        self._runner = runner
        self.urls = [_url(addr) for addr in runner.addresses]
        if s.outbound:
            self.worker = OutboundWorker(self.connector, self.nc, self.js, self.publisher, self.metrics)
            self.worker.start()
        self.log.info("connector.started", urls=self.urls, outbound=s.outbound)
        return self.urls

    async def stop(self) -> None:
        if self._runner is not None:
            await self.connector.stopping()
            await self._runner.cleanup()
            self._runner = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        await self._close_connector()
        self.log.info("connector.stopped")

    async def _close_connector(self) -> None:
        try:
            await self.connector.shutdown()
        finally:
            await self.connector.close_http()


def _url(addr: Any) -> str:
    host, port = addr[0], addr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
