"""``relaydesk up`` starts a service again when it stopped on NATS not answering in time
(``services.supervision``). Found on a loaded machine: the router's start waited longer than
the request timeout for JetStream, ``TimeoutError`` ended it, and ``up`` stopped every other
service with it ("the system stopped early")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest
import structlog.testing

from services import supervision
from services.bus.connection import ServiceFailed
from services.bus.embedded import EmbeddedNats
from services.metrics import SERVICE_RESTARTS
from services.router_runner import RouterRunner
from tests.integration.system import running_system, system_config


async def test_a_router_whose_start_timed_out_is_started_again_and_the_system_routes(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "FIRST_PAUSE_S", 0.1)
    real_load = RouterRunner._load_snapshot
    calls: list[int] = []

    async def slow_first(self: RouterRunner) -> None:
        calls.append(1)
        if len(calls) == 1:  # JetStream's answer came after the request timeout
            raise nats.errors.TimeoutError
        await real_load(self)

    monkeypatch.setattr(RouterRunner, "_load_snapshot", slow_first)
    before = SERVICE_RESTARTS.labels(service="router")._value.get()
    async with running_system(system_config(tmp_path, clean_nats.url), clean_nats) as system:
        # Routed: an SMS becomes a conversation offered to an agent (the router decided).
        assert await system.send_sms("SM" + "u" * 32, "+15550004444", "hello after a slow start") == 200

        async def offered() -> bool:
            status, body = await system.get("/v1/conversations", status="offered")
            return status == 200 and bool(body.get("conversations"))

        async with asyncio.timeout(30):
            while not await offered():
                await asyncio.sleep(0.1)
    assert len(calls) == 2
    assert SERVICE_RESTARTS.labels(service="router")._value.get() == before + 1


async def test_a_service_that_keeps_timing_out_stops_up_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "FIRST_PAUSE_S", 0.01)
    tries: list[int] = []

    async def never() -> None:
        tries.append(1)
        raise nats.errors.TimeoutError

    with pytest.raises(ServiceFailed, match="router stopped 6 times within 300 s on NATS not answering"):
        await supervision.supervised("router", never, asyncio.Event())
    assert len(tries) == supervision.RESTART_LIMIT + 1


async def test_any_other_failure_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[int] = []

    async def misconfigured() -> None:
        tries.append(1)
        raise ServiceFailed("api cannot listen on 127.0.0.1:8080")

    with pytest.raises(ServiceFailed, match="cannot listen"):
        await supervision.supervised("api", misconfigured, asyncio.Event())
    assert tries == [1]
    stop = asyncio.Event()
    stop.set()

    async def timed_out_while_stopping() -> None:
        raise nats.errors.TimeoutError

    await supervision.supervised("router", timed_out_while_stopping, stop)  # stopping anyway: no restart


async def test_the_pause_starts_short_again_after_a_service_ran_well(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(supervision, "MAX_PAUSE_S", 0.05)
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 3:
            await asyncio.sleep(0.15)  # a long healthy run, then a new trouble
        if len(runs) < 4:
            raise nats.errors.TimeoutError

    with structlog.testing.capture_logs() as logs:
        await supervision.supervised("router", flaky, asyncio.Event())
    pauses = [entry["in_seconds"] for entry in logs if entry["event"] == "up.service_restarting"]
    assert pauses == [0.01, 0.02, 0.01]
