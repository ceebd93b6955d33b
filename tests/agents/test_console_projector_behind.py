"""The customer's message reaches the console's live stream (the API folds the log) before the
projector has put it on the timeline (a busy machine, a projector catching up). The page read
the timeline once, 400 ms after the event, found nothing new and never read it again: the
message stayed missing from the open conversation until something else happened in it (found
by a loaded run of the keyboard test). It now reads again until the message is there."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from services.projector import Projector
from tests.browser import in_thread, needs_chromium

from .helpers import agent_system, agents_config
from .test_console_browser import visible
from .test_console_shift import customer_wrote, take_and_open

pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")

pytestmark = [pytest.mark.integration, needs_chromium]


async def test_a_message_the_projector_folds_late_still_shows(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = asyncio.Event()  # set: the projector folds nothing until released
    release = asyncio.Event()
    original = Projector._apply

    async def behind(self: Projector, chunk: Any, *, through: int | None = None) -> None:
        if held.is_set():
            await release.wait()
        await original(self, chunk, through=through)

    monkeypatch.setattr(Projector, "_apply", behind)
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        customer, cid = await s.open(text="first words")
        await s.offered_to(cid, "ava")
        await in_thread(lambda: take_and_open(browser, s.api, token, cid))
        await in_thread(lambda: visible(browser, "#timeline li", "first words", timeout=20))
        held.set()
        await s.store.append(customer_wrote(customer, cid, "still nothing at the door"))
        # The page hears of it and reads the timeline: nothing new there yet. Reading the page
        # while the projector is held proves the message came by no other way.
        with pytest.raises(Exception, match="still nothing"):
            await in_thread(lambda: visible(browser, "#timeline li", "still nothing", timeout=2))
        release.set()
        await in_thread(lambda: visible(browser, "#timeline li", "still nothing at the door", timeout=15))
