"""Shared desks: before sign-in the console shows no work regions, and Log out leaves nothing
of the previous agent in the page (headless Chromium: see tests/browser.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.api.session import COOKIE
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, displayed, visible

pytestmark = [pytest.mark.integration, needs_chromium]


async def test_log_out_leaves_nothing_of_the_last_agent_and_the_next_one_signs_in(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        ava, _ = await s.issue_token("ava")
        bruno, _ = await s.issue_token("bruno")
        held_customer, held = await s.open(text="ava-private: my card ending 4242 was charged twice")
        await eventually(lambda: s.conversation(held, "offered"))
        assert (await s.call("POST", f"/v1/conversations/{held}/accept", token=ava))[0] == 200
        offered_customer, offered = await s.open(text="ava-private: second question")
        await eventually(lambda: s.conversation(offered, "offered"))

        def before_sign_in() -> None:
            browser.get(s.api + "/console")
            visible(browser, "#token")
            # Nothing of a workspace before anyone signs in: the `hidden` regions stay hidden.
            for region in ("#agent-view", "#supervisor-view", "#offers", "#queues", "#logout", "#status"):
                assert not displayed(browser, region), f"{region} shows before sign-in"

        await in_thread(before_sign_in)

        def ava_at_work() -> None:
            visible(browser, "#token").send_keys(ava)
            click(browser, "#login-form button")
            visible(browser, "#who", "Ava")
            visible(browser, f'#offers li[data-id="{offered}"]')
            click(browser, f'#assigned li[data-id="{held}"]')
            visible(browser, "#timeline li", "card ending 4242", timeout=20)
            visible(browser, "#reply-text").send_keys("ava-private draft")
            visible(browser, "#customer-panel")

        await in_thread(ava_at_work)

        def log_out() -> str:
            click(browser, "#logout")
            visible(browser, "#token")
            return str(browser.page_source)

        page = await in_thread(log_out)
        for secret in ("ava-private", "4242", "Ava", held, offered, held_customer, offered_customer):
            assert secret not in page, f"{secret!r} is still in the page after Log out"
        for region in ("#agent-view", "#customer-panel", "#offers", "#status", "#logout", "#alert"):
            assert not await in_thread(displayed, browser, region), f"{region} shows after Log out"
        assert "card ending" not in await in_thread(lambda: browser.execute_script("return document.body.innerText"))

        def session_gone() -> bool:
            return all(c["name"] != COOKIE for c in browser.get_cookies())

        await in_thread(lambda: eventually_sync(session_gone))
        # A reload does not sign Ava in again: the cookie is gone.
        await in_thread(browser.refresh)
        await in_thread(lambda: visible(browser, "#token"))
        assert not await in_thread(displayed, browser, "#agent-view")

        def bruno_signs_in() -> str:
            visible(browser, "#token").send_keys(bruno)
            click(browser, "#login-form button")
            visible(browser, "#who", "Bruno")
            visible(browser, "#live.on")
            return str(browser.page_source)

        page = await in_thread(bruno_signs_in)
        for secret in ("ava-private", "4242", held, offered, held_customer):
            assert secret not in page, f"{secret!r} shows to Bruno"


def eventually_sync(condition: Any, timeout: float = 10.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(None, timeout, poll_frequency=0.1).until(lambda _: condition(), "condition not met")
