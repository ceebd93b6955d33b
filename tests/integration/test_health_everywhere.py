"""Every service process answers /healthz, /readyz and /metrics on its health port
(``services.health``): ready while NATS and the streams are there, 503 naming the failing
services while NATS is away, ready again once it is back; and a single service whose health
port is taken refuses to start, naming the port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats, free_port
from services.config import Config
from tests.integration.routers import RouterProcesses
from tests.integration.system import eventually, running_system, system_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVERY_SERVICE = {"intake", "router", "projector", "api", "delivery", "connector sms"}


def with_health_port(config: Config) -> tuple[Config, str]:
    port = free_port()
    config.health = msgspec.structs.replace(config.health, port=port)
    return config, f"http://127.0.0.1:{port}"


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body
    except (aiohttp.ClientError, TimeoutError):
        return 0, None  # not listening (yet)


def answers(http: aiohttp.ClientSession, url: str, status: int) -> Any:
    async def probe() -> Any:
        got, body = await fetch(http, url)
        return body if got == status else None

    return probe


async def test_readyz_of_every_service_follows_nats(clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    config, health = with_health_port(system_config(tmp_path, clean_nats.url))
    async with running_system(config, clean_nats) as system:
        http = system.http
        connector = system.sms_url.removesuffix("/twilio/sms")
        ready = await eventually(answers(http, health + "/readyz", 200), timeout=30)
        assert set(ready["checks"]) == EVERY_SERVICE
        assert ready["checks"]["router"]["role"] in ("leader", "standby")
        assert ready["checks"]["delivery"]["role"] == "idle"  # no endpoints configured: no lease to take
        assert ready["checks"]["intake"]["consumer"] is True
        assert ready["checks"]["projector"]["lag_events"] >= 0
        # The API and the connector keep their own probes on their own ports.
        await eventually(answers(http, system.api + "/readyz", 200), timeout=30)
        await eventually(answers(http, connector + "/readyz", 200), timeout=30)

        port = clean_nats.port
        await clean_nats.astop()
        try:
            down = await eventually(answers(http, health + "/readyz", 503), timeout=30)

            async def every_service_failing() -> Any:
                status, body = await fetch(http, health + "/readyz")
                return body if status == 503 and set(body["failing"]) == EVERY_SERVICE else None

            down = await eventually(every_service_failing, timeout=30)
            assert all(check["nats_connected"] is False for check in down["checks"].values())
            assert (await fetch(http, health + "/healthz"))[0] == 200  # alive throughout
            await eventually(answers(http, system.api + "/readyz", 503), timeout=30)
            await eventually(answers(http, connector + "/readyz", 503), timeout=30)
            metrics = await fetch(http, health + "/metrics")
            assert metrics[0] == 200 and "relaydesk_events_appended_total" in metrics[1]
        finally:
            clean_nats.port = port
            await clean_nats.astart()

        ready = await eventually(answers(http, health + "/readyz", 200), timeout=60, every=0.5)
        assert all(check["ok"] for check in ready["checks"].values())
        assert (await fetch(http, health + "/healthz"))[0] == 200
        await eventually(answers(http, system.api + "/readyz", 200), timeout=60, every=0.5)
        await eventually(answers(http, connector + "/readyz", 200), timeout=60, every=0.5)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_service_whose_health_port_is_taken_exits_naming_it(nats_url: str, taken_port: int) -> None:
    env = {**os.environ, "RELAYDESK_NATS_URL": nats_url, "RELAYDESK_HEALTH_PORT": str(taken_port)}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "router"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"127.0.0.1:{taken_port}" in done.stderr and "health" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


async def test_a_single_router_process_serves_its_probes(
    clean_nats: EmbeddedNats, routers: RouterProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("RELAYDESK_HEALTH_PORT", str(port))  # the subprocess inherits it
    health = f"http://127.0.0.1:{port}"
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())  # as `relaydesk setup` would
    await nc.close()
    routers.start("solo")
    async with aiohttp.ClientSession() as http:
        assert await eventually(answers(http, health + "/healthz", 200), timeout=30)
        ready = await eventually(answers(http, health + "/readyz", 200), timeout=30)
        assert ready["checks"]["router"]["role"] in ("leader", "standby")
        led = await eventually(lambda: _role(http, health, "leader"), timeout=30)  # the only router leads
        assert led["checks"]["router"]["instance"] == "solo"
        status, text = await fetch(http, health + "/metrics")
        assert status == 200 and "relaydesk_routing_decisions_total" in text

        nats_port = clean_nats.port
        await clean_nats.astop()
        try:
            down = await eventually(answers(http, health + "/readyz", 503), timeout=30)
            assert down["failing"] == ["router"]
            assert (await fetch(http, health + "/healthz"))[0] == 200
        finally:
            clean_nats.port = nats_port
            await clean_nats.astart()
        await eventually(answers(http, health + "/readyz", 200), timeout=60, every=0.5)
    proc = routers.procs["solo"]
    assert proc.poll() is None, (tmp_path / "solo.log").read_text()[-3000:]


async def _role(http: aiohttp.ClientSession, health: str, role: str) -> Any:
    status, body = await fetch(http, health + "/readyz")
    return body if status == 200 and body["checks"]["router"]["role"] == role else None


async def test_intake_that_records_nothing_for_a_while_is_not_ready_and_says_why(clean_nc: Any) -> None:
    """Found by an audit: with a stream refusing every append, intake parked customers'
    messages one after another while its /readyz said ready."""
    import time

    from services.health.checks import INTAKE_FAILING_S, intake_check
    from services.intake.settling import REDELIVERY, prepare

    watch = await prepare(clean_nc, REDELIVERY)
    try:
        failing: tuple[float | None, str] = (None, "")
        check = intake_check(clean_nc, lambda: failing)
        assert (await check()).ok
        failing = (time.monotonic() - 5, "maximum messages exceeded")  # a moment: a hiccup
        assert (await check()).ok
        failing = (time.monotonic() - INTAKE_FAILING_S - 1, "maximum messages exceeded")
        result = await check()
        assert not result.ok
        assert result.detail["reason"].startswith("no message recorded for 31 s, each failing: maximum messages")
    finally:
        await watch.stop()


async def test_agent_events_are_no_projector_lag(clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    # The API counted agent events (which the projector does not fold) as the projector's lag,
    # on the gauge the projector sets from its own measure: an idle system showed a lag of 1
    # after an agent went away, until a customer wrote (found by an audit).
    config, health = with_health_port(system_config(tmp_path, clean_nats.url))
    async with running_system(config, clean_nats) as system:
        http = system.http
        await eventually(answers(http, system.api + "/readyz", 200), timeout=30)
        agent = config.agents[0].id
        status, _ = await system.post(f"/v1/agents/{agent}/status", {"status": "away"})
        assert status == 200

        async def no_lag_anywhere() -> Any:
            _, api = await fetch(http, system.api + "/readyz")
            _, metrics = await fetch(http, health + "/metrics")
            if not isinstance(api, dict) or not isinstance(metrics, str):
                return None
            gauge = [ln for ln in metrics.splitlines() if ln.startswith("relaydesk_projector_lag_events{")]
            lag = api.get("projection", {}).get("lag_events")
            return (lag, gauge) if lag == 0 and gauge and all(ln.endswith(" 0.0") for ln in gauge) else None

        await eventually(no_lag_anywhere, timeout=30)
