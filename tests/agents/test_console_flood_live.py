"""The console while one customer floods (a real browser; the flood audit): the page reloads
what an event concerns after a short pause, and the pause began again at every event, so while
a customer wrote faster than every 100 ms the agent's work list, her new offers included, never
reloaded (and every supervisor's board, 200 ms), for as long as the flood lasted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import agent_system, agents_config
from .test_console_browser import click, visible
from .test_console_shift import customer_wrote, take_and_open

pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")

pytestmark = [pytest.mark.integration, needs_chromium]


async def test_a_new_offer_shows_while_another_customer_floods(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        bot, flooded = await s.open(text="first words")
        await s.offered_to(flooded, "ava")
        await in_thread(lambda: take_and_open(browser, s.api, token, flooded))
        await s.conversation(flooded, "assigned")

        async def flood() -> None:
            n = 0
            while True:  # paced like a bot: faster than the page's 100 ms pause, never stopping
                await s.store.append(customer_wrote(bot, flooded, f"spam {n}"))
                n += 1
                await asyncio.sleep(0.02)

        flooding = asyncio.create_task(flood())
        try:
            _, other = await s.open(text="my parcel never came")
            await s.offered_to(other, "ava")
            assert not flooding.done()
            await in_thread(lambda: visible(browser, f'#offers li[data-id="{other}"]', timeout=20))
            assert not flooding.done()  # shown while the flood still went on
        finally:
            flooding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flooding
        await in_thread(lambda: click(browser, f'#offers li[data-id="{other}"]'))
