"""The health listener every service process runs on ``[health] host:port``:

- ``GET /healthz``: 200 while the process runs (liveness: nothing is checked).
- ``GET /readyz``: 200 with every check's detail when all pass, 503 naming the failing ones.
- ``GET /metrics``: prometheus_client's text exposition of the default registry (the checks
  run first, so gauges they set, such as the projector's lag, are fresh).

No token: it serves no customer data, and binds 127.0.0.1 unless the operator (the image)
says otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.config import Config
from services.health.checks import Health

log = structlog.get_logger(__name__)


class HealthPortTaken(Exception):
    def __init__(self, host: str, port: int, why: str) -> None:
        super().__init__(
            f"health listener cannot listen on {host}:{port}: {why} ([health] port, RELAYDESK_HEALTH_PORT)"
        )
        self.host, self.port = host, port


def build_app(health: Health) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready, checks = await health.run()
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if not checks:
            body["reason"] = "starting: no service has registered its checks yet"
        if not ready:
            body["failing"] = sorted(name for name, result in checks.items() if not result["ok"])
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        await health.run()  # refreshes the gauges the checks set
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start(health: Health, host: str, port: int) -> web.AppRunner:
    """Listen on host:port (port 0: any free port); raise HealthPortTaken if it cannot."""
    runner = web.AppRunner(build_app(health), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as err:
        await runner.cleanup()
        raise HealthPortTaken(host, port, err.strerror or repr(err)) from err
    health.port = _bound_port(runner, port)
    log.info("health.listening", url=f"http://{host}:{health.port}", paths=["/healthz", "/readyz", "/metrics"])
    return runner


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return asked


@contextlib.asynccontextmanager
async def serving(config: Config, health: Health, *, any_port_if_taken: bool) -> AsyncIterator[Health]:
    """The process's health server for as long as the block runs ([health] port 0: none).

    ``any_port_if_taken``: ``relaydesk up`` (many may run on one machine, tests run many at
    once) takes a free port when the configured one is taken and logs it; a single service
    fails instead (``HealthPortTaken``), since its probes are configured for that port."""
    host, port = config.health.host, config.health.port
    if port == 0:
        log.info("health.off", reason="[health] port is 0")
        yield health
        return
    try:
        runner = await start(health, host, port)
    except HealthPortTaken as err:
        if not any_port_if_taken:
            raise
        log.warning("health.port_taken", port=port, error=str(err), action="listening on a free port instead")
        runner = await start(health, host, 0)
        print(
            f"relaydesk: health port {port} is taken; /healthz, /readyz, /metrics on {host}:{health.port}",
            file=sys.stderr,
            flush=True,
        )
    try:
        yield health
    finally:
        await runner.cleanup()
