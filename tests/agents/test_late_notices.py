"""Notices sent late (a delivery service started, or an endpoint added, after the facts) leave
out offers and assignments the log has already answered. Found by a docs audit: a new endpoint
was sent "offer" notices for offers long accepted. Live notices are unchanged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats
from services.delivery.service import DeliveryService
from services.delivery.settings import Endpoint

from .helpers import agent_system, agents_config, eventually, holds, ok, receiver

pytestmark = pytest.mark.integration


async def test_a_late_start_notifies_the_offer_still_open_and_not_the_one_accepted(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver() as hook:
        endpoints = (Endpoint(kind="webhook", id="hook", agent="*", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints)
        async with agent_system(config, clean_nats, services=("router", "api")) as s:
            ava, _ = await s.issue_token("ava")
            _, answered = await s.open(text="my invoice is wrong")
            await s.offered_to(answered, "ava")
            await ok(s, "POST", f"/v1/conversations/{answered}/accept", ava)
            _, waiting = await s.open(text="my invoice is wrong too")
            await s.offered_to(waiting, "ava")

            # The delivery service starts a minute after all this (its clock says so).
            later = DeliveryService(
                s.store,
                config.delivery,
                console_url=s.api + "/console",
                api_url=s.api,
                clock=lambda: datetime.now(UTC) + timedelta(minutes=1),
            )
            stop = asyncio.Event()
            running = asyncio.create_task(later.run(stop))
            try:

                def offers() -> list[str]:
                    return [b["conversation"]["id"] for seen in hook.ok() if (b := seen.json())["notice"] == "offer"]

                # Notices go out in log order: once the later offer is out, the earlier was judged.
                await eventually(holds(lambda: waiting in offers()))
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
            assert answered not in offers()  # she accepted it a minute before
