"""One slow or broken endpoint does not hold up the other agents' notices, and a receiver's
``Retry-After`` (Slack incoming webhooks, any 429 / 503) is waited out before the next attempt,
without holding a concurrency slot meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from aiohttp import web

from events.subjects import LEASE_BUCKET
from services.bus.embedded import EmbeddedNats, free_port
from services.config import AgentSeed
from services.delivery.endpoints import endpoint_limit, settings_problems
from services.delivery.late_notices import superseded_reason
from services.delivery.senders import Senders
from services.delivery.settings import DeliverySettings, Endpoint

from .helpers import agent_system, agents_config, eventually, holds, receiver

SECRET = "whsec-test-0123456789"


@dataclass
class Stuck:
    """A receiver that hangs (``release`` unset) or answers ``status`` with ``headers``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    url: str = ""
    hits: int = 0
    hanging: int = 0
    most_hanging: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        if self.hang:
            self.hanging += 1
            self.most_hanging = max(self.most_hanging, self.hanging)
            try:
                await self.release.wait()
            finally:
                self.hanging -= 1
        return web.Response(
            status=self.status, headers=self.headers, text="ok" if self.status < 300 else "rate_limited"
        )


@contextlib.asynccontextmanager
async def stuck(**kwargs: Any) -> AsyncIterator[Stuck]:
    fake = Stuck(**kwargs)
    app = web.Application()
    app.router.add_post("/hook", fake.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


# Beside Bruno, three more agents who take Spanish conversations (and not Ava's).
SPANISH = tuple(
    AgentSeed(id=name, name=name.capitalize(), skills={"billing": 3}, languages={"es": 5}, tier=1)
    for name in ("carla", "diego", "elena")
)


def _of(records: list[dict[str, Any]], endpoint_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["endpoint_id"] == endpoint_id]


@pytest.mark.integration
async def test_a_hanging_endpoint_does_not_hold_up_another_agents_offer(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with stuck(hang=True) as team, receiver() as hook:
        endpoints = (
            Endpoint(kind="slack", id="team-slack", agent="*", url=team.url),
            Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),
        )
        # Requests to the team Slack hang far longer than this test waits for Ava's offer.
        cfg = agents_config(tmp_path, clean_nats.url, endpoints, concurrency=4, timeout=120.0, max_attempts=1)
        cfg.agents = (*cfg.agents, *SPANISH)
        async with agent_system(cfg, clean_nats) as s:
            for _ in range(4):  # offers to Bruno and the other Spanish speakers: only the team Slack is told
                await s.open(language="es")
            await eventually(lambda: _pending(s, "team-slack", 4))
            await eventually(holds(lambda: team.hanging >= 1))
            await s.open(language="en")  # Ava's offer: her own webhook answers at once
            await eventually(holds(hook.ok), timeout=20)
            # Delivered while the team Slack's requests still hang, their records pending.
            assert not team.release.is_set() and team.hanging >= 1
            assert len(_of(await s.deliveries("pending"), "team-slack")) == 5
            assert team.most_hanging <= endpoint_limit(cfg.delivery)  # one endpoint never takes the pool
            team.release.set()


async def _pending(s: Any, endpoint_id: str, n: int) -> list[dict[str, Any]] | None:
    found = _of(await s.deliveries("pending"), endpoint_id)
    return found if len(found) >= n else None


@pytest.mark.integration
async def test_a_retry_after_is_waited_out_without_holding_up_other_agents(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    # A Slack incoming webhook that is rate limited: 429 "rate_limited", Retry-After: 20.
    async with stuck(status=429, headers={"Retry-After": "20"}) as team, receiver() as hook:
        endpoints = (
            Endpoint(kind="slack", id="team-slack", agent="*", url=team.url),
            Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),
        )
        # One slot in all: a delivery backing off must not be holding it.
        cfg = agents_config(
            tmp_path, clean_nats.url, endpoints, concurrency=1, backoff_base=0.05, backoff_max=60.0, max_attempts=5
        )
        async with agent_system(cfg, clean_nats) as s:
            await s.open(language="es")  # Bruno's: the team Slack only
            [waiting] = await eventually(lambda: _backing_off(s))
            [attempt] = waiting["attempts"]
            assert attempt["status_code"] == 429
            asked = datetime.fromisoformat(waiting["next_attempt_at"]) - datetime.fromisoformat(attempt["at"])
            assert asked.total_seconds() >= 19.5, asked  # what Slack asked for, not the 50 ms backoff
            await s.open(language="en")  # Ava's offer
            await eventually(holds(hook.ok), timeout=15)
            # Delivered while the team Slack waits out its Retry-After: not tried again yet.
            team_records = _of(await s.deliveries(), "team-slack")
            assert {r["status"] for r in team_records} == {"pending"}
            assert team.hits == len(team_records) <= 2
            assert all(len(r["attempts"]) <= 1 for r in team_records)


@pytest.mark.integration
async def test_a_stop_while_a_delivery_waits_out_retry_after_hands_the_lease_back(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    # The stop used to wait for the 20 s Retry-After until `up` cancelled delivery part way
    # through its stop: the lease was never handed back (a standby waited out its TTL) and
    # the HTTP session was left open.
    async with stuck(status=429, headers={"Retry-After": "20"}) as team:
        endpoints = (Endpoint(kind="slack", id="team-slack", agent="*", url=team.url),)
        cfg = agents_config(tmp_path, clean_nats.url, endpoints, backoff_max=60.0, max_attempts=5)
        async with agent_system(cfg, clean_nats) as s:
            await s.open(language="es")
            await eventually(lambda: _backing_off(s))
    nc = await nats.connect(clean_nats.url)
    try:
        entry = await (await nc.jetstream().key_value(LEASE_BUCKET)).get("delivery")
        assert msgspec.json.decode(entry.value or b"{}")["expires"] == 0.0  # handed back, not left to lapse
    finally:
        await nc.close()


async def _backing_off(s: Any) -> list[dict[str, Any]] | None:
    found = [r for r in _of(await s.deliveries("pending"), "team-slack") if r["next_attempt_at"]]
    return found or None


async def test_retry_after_is_read_from_slack_and_webhook_refusals() -> None:
    settings = DeliverySettings(timeout=5.0)
    senders = Senders(settings)
    try:
        for status, headers, expected in (
            (429, {"Retry-After": "20"}, 20.0),
            (429, {}, 1.0),  # a 429 that does not say still gets a pause
            (503, {"Retry-After": "7"}, 7.0),
            (503, {}, None),
            (500, {"Retry-After": "7"}, None),
        ):
            async with stuck(status=status, headers=headers) as fake:
                endpoint = Endpoint(kind="slack", id="s", agent="*", url=fake.url)
                outcome = await senders.send(endpoint, "d1", {"notice": "offer"}, "s")
                assert (outcome.ok, outcome.retryable, outcome.status_code) == (False, True, status)
                assert outcome.retry_after == expected, (status, headers)
                hook = Endpoint(kind="webhook", id="w", agent="*", url=fake.url, secret=SECRET)
                assert (await senders.send(hook, "d2", {"notice": "offer"}, "w")).retry_after == expected
    finally:
        await senders.close()


def test_one_endpoint_gets_a_share_of_the_pool() -> None:
    assert endpoint_limit(DeliverySettings(concurrency=32)) == 8
    assert endpoint_limit(DeliverySettings(concurrency=4)) == 1
    assert endpoint_limit(DeliverySettings(concurrency=1)) == 1
    # An operator who knows the tool takes more (a helpdesk's API) sets the share outright.
    assert endpoint_limit(DeliverySettings(concurrency=32, per_endpoint_concurrency=20)) == 20


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (DeliverySettings(concurrency=0), "concurrency must be 1 or more"),
        (DeliverySettings(concurrency=8, per_endpoint_concurrency=9), "per_endpoint_concurrency"),
        (DeliverySettings(per_endpoint_concurrency=-1), "per_endpoint_concurrency"),
        (DeliverySettings(max_attempts=0), "max_attempts"),
        (DeliverySettings(timeout=0), "timeout"),
        (DeliverySettings(backoff_max=-1), "backoff_max"),
    ],
)
def test_delivery_refuses_limits_that_cannot_work_naming_the_setting(settings: DeliverySettings, named: str) -> None:
    assert any(named in p for p in settings_problems(settings))


def test_a_superseded_notice_says_in_words_which_notice_no_longer_stands() -> None:
    # GET /v1/deliveries shows the reason to an operator: an assignment notice read
    # "the assigned no longer stands" (found by a docs audit).
    assert superseded_reason("offer", "assigned") == "the offer no longer stands: the conversation is assigned now"
    assert (
        superseded_reason("assigned", "resolved") == "the assignment no longer stands: the conversation is resolved now"
    )
