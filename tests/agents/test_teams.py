"""Offers and assignments reach Microsoft Teams as Adaptive Cards, over a real nats-server,
through a fake Teams Workflows webhook ("Post to a channel when a webhook request is received":
it takes a ``message`` with an adaptive-card attachment and answers 202; it throttles with 429)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.bus.embedded import EmbeddedNats, free_port
from services.delivery import teams
from services.delivery.endpoints import settings_problems
from services.delivery.settings import DeliverySettings, Endpoint

from .helpers import agent_system, agents_config, eventually, holds, receiver

pytestmark = pytest.mark.integration

WORDS = "My invoice is wrong, call me back"


def card_of(seen: Any) -> dict[str, Any]:
    message = seen.json()
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content: dict[str, Any] = attachment["content"]
    assert (content["type"], content["version"]) == ("AdaptiveCard", "1.4")
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    return content


def facts_of(content: dict[str, Any]) -> dict[str, str]:
    [fact_set] = [b for b in content["body"] if b["type"] == "FactSet"]
    return {f["title"]: f["value"] for f in fact_set["facts"]}


async def test_offers_and_assignments_reach_teams_as_adaptive_cards(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    # The first post is throttled (429): the card is posted again, and only once delivered.
    async with receiver(script=[429], then=202) as workflow:
        endpoints = (Endpoint(kind="teams", id="billing-teams", team="billing", url=workflow.url),)
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            customer, cid = await s.open(text=WORDS)
            await eventually(lambda: s.conversation(cid, "offered"))
            await eventually(holds(lambda: workflow.ok()))

            offer = workflow.ok()[0]
            content = card_of(offer)
            assert content["body"][0]["text"] == "New offer · sms"
            facts = facts_of(content)
            assert facts["Agent"] in ("Ava", "ava")  # the name when the notice carries it
            assert (facts["Conversation"], facts["Channel"], facts["Tier"]) == (cid, "sms", "standard")
            assert (facts["Language"], facts["Skills"]) == ("en", "billing ≥1")
            assert "Offer expires" in facts and "Wait" in facts
            buttons = {a["title"]: a for a in content["actions"]}
            assert all(a["type"] == "Action.OpenUrl" for a in buttons.values())
            assert buttons["Accept in console"]["url"].endswith(f"/console#accept={cid}")
            assert buttons["Open in console"]["url"].endswith(f"/console#conversation={cid}")
            # A team channel: nothing the customer wrote, nor how to reach them.
            raw = offer.body.decode()
            assert "invoice" not in raw and "call me" not in raw
            assert "0000" not in raw and "+1555" not in raw and customer not in raw

            [record] = await eventually(lambda: _delivered(s, "billing-teams"))
            assert record["kind"] == "teams" and record["attempt_count"] == 2

            # Email is assigned without an offer: an "Assigned to you" card.
            _, mail = await s.open(channel="email", text=WORDS)
            await eventually(lambda: s.conversation(mail, "assigned"))

            async def assigned_card() -> dict[str, Any] | None:
                for seen in workflow.ok():
                    content = card_of(seen)
                    if facts_of(content)["Conversation"] == mail:
                        return content
                return None

            content = await eventually(assigned_card)
            assert content["body"][0]["text"] == "Assigned to you · email"
            assert [a["title"] for a in content["actions"]] == ["Open in console"]


async def test_a_refused_card_is_dead_lettered_with_the_reason(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with receiver(then=400) as workflow:
        endpoints = (Endpoint(kind="teams", id="ava-teams", agent="ava", url=workflow.url),)
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            _, cid = await s.open(text=WORDS)
            await eventually(lambda: s.conversation(cid, "offered"))
            [failed] = await eventually(lambda: _failed(s))
            assert failed["endpoint_id"] == "ava-teams" and "HTTP 400" in failed["reason"]
            assert len(workflow.seen) == 1  # a 4xx other than 408/425/429 is not retried


def test_a_teams_endpoint_needs_a_url() -> None:
    settings = DeliverySettings(endpoints=(Endpoint(kind="teams", id="t", agent="ava", url="teams.example.com"),))
    assert settings_problems(settings) == ["endpoint t: teams needs an http(s) url"]


def test_a_card_without_links_or_facts_still_renders() -> None:
    content = teams.card({"notice": "released"})
    assert content["body"][0]["text"] == "Conversation handed back"
    assert "actions" not in content


async def _delivered(s: Any, endpoint_id: str) -> list[dict[str, Any]] | None:
    found = [d for d in await s.deliveries("delivered") if d["endpoint_id"] == endpoint_id]
    return found or None


async def _failed(s: Any) -> list[dict[str, Any]] | None:
    return await s.deliveries("failed") or None


# -- throttling: Retry-After -------------------------------------------------------------------


@dataclass
class Workflow:
    """A fake Workflows webhook that throttles as Power Automate documents it: ``throttle``
    answers of 429 with ``Retry-After`` (header value), then 202 Accepted."""

    retry_after: str
    throttle: int = 1
    url: str = ""
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each POST
    cards: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        message = await request.json()
        if len(self.arrivals) <= self.throttle:
            body = {"error": {"code": "TooManyRequests", "message": "Rate limit is exceeded. Try again later."}}
            return web.json_response(body, status=429, headers={"Retry-After": self.retry_after})
        self.cards.append(message["attachments"][0]["content"])
        return web.Response(status=202)


@contextlib.asynccontextmanager
async def workflow(retry_after: str, throttle: int = 1) -> AsyncIterator[Workflow]:
    fake = Workflow(retry_after, throttle)
    app = web.Application()
    app.router.add_post("/workflows/hook", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}/workflows/hook"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def test_a_throttled_card_waits_for_retry_after_before_the_next_try(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    # The delivery's own backoff is ~50 ms here: only Retry-After makes the next try wait 1 s.
    async with workflow(retry_after="1") as fake:
        endpoints = (Endpoint(kind="teams", id="billing-teams", team="billing", url=fake.url),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, backoff_base=0.05, backoff_max=5.0)
        async with agent_system(config, clean_nats) as s:
            _, cid = await s.open(text=WORDS)
            [record] = await eventually(lambda: _delivered(s, "billing-teams"))
            assert record["attempt_count"] == 2
            first, second = fake.arrivals[:2]
            assert second - first >= 1.0, f"retried {second - first:.3f} s after a 429 asking for 1 s"
            assert facts_of(fake.cards[0])["Conversation"] == cid


async def test_retry_after_as_an_http_date_is_honoured_up_to_the_cap() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    async with workflow(retry_after=later, throttle=2) as fake, aiohttp.ClientSession() as http:
        posted = await teams.post(http, fake.url, {"notice": "offer"}, max_wait=5.0, sleep=sleep)
        assert (posted.ok, posted.retryable, posted.status_code) == (False, True, 429)
        assert posted.retry_after is not None and 25 < posted.retry_after <= 30
        assert waits == [5.0]  # capped: the delivery's backoff takes over from there
        fake.retry_after = "0.2"
        posted = await teams.post(http, fake.url, {"notice": "offer"}, max_wait=5.0, sleep=sleep)
        assert waits == [5.0, 0.2] and posted.retry_after == 0.2
        posted = await teams.post(http, fake.url, {"notice": "offer"}, max_wait=5.0, sleep=sleep)
        assert posted.ok and posted.status_code == 202 and len(waits) == 2  # no pause after success


def test_retry_after_values() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert teams.retry_after_seconds("7") == 7.0
    assert teams.retry_after_seconds("Thu, 01 Jan 2026 00:00:09 GMT", lambda: now) == 9.0
    assert teams.retry_after_seconds("Wed, 31 Dec 2025 23:59:00 GMT", lambda: now) == 0.0  # already past
    assert teams.retry_after_seconds("-3") == 0.0
    for unreadable in (None, "", "soon"):
        assert teams.retry_after_seconds(unreadable) is None
