"""The supervisor page draws a bounded number of rows, says how many there are, and shows more
on request (found by a scale audit: it asked for every open conversation and every agent every
3 s and drew a row for each, each row with a menu of every agent: at 80,000 conversations and
5,000 agents the tab froze)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.model import AgentProfile, AgentProfileUpdated, ConversationOpened, Requirements, RoutingRequested
from events.store import Append
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import fit_window
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, visible

pytestmark = [pytest.mark.integration, needs_chromium]

OPEN = 130  # more than a page (100)
AGENTS = 105  # and more agents than a page, besides the roster's two


async def test_the_supervisor_page_shows_a_page_of_open_conversations_and_more_on_request(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats, services=("api",)) as s:
        status, issued = await s.call("POST", "/v1/agents/ava/tokens", body={"role": "supervisor"})
        assert status == 201, issued
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        batch: list[Append] = []
        for i in range(OPEN):
            customer, cid, at = (
                f"cu{uuid.uuid4().hex[:10]}",
                f"cv{i:04d}{uuid.uuid4().hex[:6]}",
                t0 + timedelta(seconds=i),
            )
            batch += [
                Append(
                    ConversationOpened(at=at, customer_id=customer, conversation_id=cid, channel="sms", contact="+1")
                ),
                Append(
                    RoutingRequested(
                        at=at, customer_id=customer, conversation_id=cid, channel="sms", requirements=Requirements()
                    )
                ),
            ]
        profile = AgentProfile(name="Agent", skills={"billing": 3}, languages={"en": 5})
        batch += [Append(AgentProfileUpdated(at=t0, agent_id=f"ag{i:04d}", profile=profile)) for i in range(AGENTS)]
        await s.store.append_many(batch)

        async def all_there() -> bool:
            status, body = await s.call("GET", "/v1/conversations?limit=1")
            _, agents = await s.call("GET", "/v1/agents?limit=1")
            return status == 200 and body.get("total") == OPEN and agents.get("total") == AGENTS + 2

        await eventually(all_there)

        def rows() -> int:
            return len(browser.find_elements("css selector", "#open-conversations tbody tr"))

        def look() -> None:
            fit_window(browser)
            browser.get(s.api + "/console#supervisor")
            visible(browser, "#token").send_keys(issued["token"])
            click(browser, "#login-form button")
            visible(browser, "#conversations-shown", f"Showing 100 of {OPEN} open conversations")
            assert rows() == 100
            # No row's menu is filled before it is used: the page holds a few options, not rows × agents.
            assert len(browser.find_elements("css selector", "#open-conversations option")) == 100
            click(browser, "#conversations-more")
            visible(browser, "#conversations-shown", f"Showing {OPEN} of {OPEN} open conversations")
            assert rows() == OPEN
            assert not browser.find_element("css selector", "#conversations-more").is_displayed()
            visible(browser, "#agents-shown", f"Showing 100 of {AGENTS + 2} agents")
            # Her own transfer menu still names every other agent (they come a page at a time).
            click(browser, "#nav-work")
            visible(browser, "#agent-view")
            options = browser.find_elements("css selector", "#to-agent option")
            assert len(options) == 1 + AGENTS + 1  # "—", the added agents and Bruno (not herself)

        await in_thread(look)
