"""The open conversation of a flooding customer in the console (a real browser; the flood
audit): each message the customer sends makes the page load the timeline again, and it read
the customer's whole timeline each time, 1,000 entries a request (50 requests and ~25 MB for
a conversation of 50,000 messages, every 400 ms while the flood lasted, to draw the last 200).
Now a load reads what came after what the page has."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import agent_system, agents_config
from .test_console_browser import click, visible
from .test_console_shift import customer_wrote, offer_for_ava, sign_in

pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")

pytestmark = [pytest.mark.integration, needs_chromium]

TIMELINE_READS = """return performance.getEntriesByType("resource").map((e) => e.name)
  .filter((name) => name.includes("/timeline?"));"""


async def test_a_flood_in_the_open_conversation_reads_only_what_is_new(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, customer, cid = await offer_for_ava(s, "first words")

        def open_it() -> None:
            sign_in(browser, s.api, token)
            browser.execute_script("performance.setResourceTimingBufferSize(100000)")  # 250 by default
            click(browser, f'#offers li[data-id="{cid}"]')
            visible(browser, "#timeline li", "first words")

        await in_thread(open_it)
        for n in range(20):
            await s.store.append(customer_wrote(customer, cid, f"spam {n}"))
            await asyncio.sleep(0)  # written one by one, as a flood comes
        await s.store.append(customer_wrote(customer, cid, "the newest words"))

        def reads() -> list[str]:
            visible(browser, "#timeline li", "the newest words", timeout=20)
            found: list[str] = browser.execute_script(TIMELINE_READS)
            return found

        found = await in_thread(reads)
        # The page loaded the timeline again for the news (at least once after opening it)...
        assert len(found) >= 2, found
        # ...and read it whole only when the conversation was opened.
        whole = [name for name in found if "after=" not in name]
        assert len(whole) == 1, found
