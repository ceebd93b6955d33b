"""The supervisor page (``/console#supervisor``) in a real browser: queues say why work waits,
agents show load and status, and a supervisor moves a conversation and sets a status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import fit_window, screenshot
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, displayed, read, visible

pytestmark = [pytest.mark.integration, needs_chromium]


async def test_a_supervisor_sees_why_work_waits_moves_it_and_sets_an_agents_status(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        status, issued = await s.call(
            "POST", "/v1/agents/ava/tokens", body={"label": "team lead", "role": "supervisor"}
        )
        assert status == 201, issued
        lead = issued["token"]
        agent, _ = await s.issue_token("bruno")
        _, french = await s.open(language="fr", text="bonjour")  # nobody speaks French: it waits
        await eventually(lambda: s.conversation(french, "waiting"))
        _, english = await s.open(text="hello there")
        await eventually(lambda: s.conversation(english, "offered"))
        # One of the team's canned replies, so the page's last section shows one (the screenshot).
        status, _ = await s.call(
            "PUT",
            "/v1/canned-replies/refund-sent",
            body={"title": "Refund sent", "text": "Hi {customer.name}, your refund is on its way."},
        )
        assert status == 201

        def look() -> None:
            fit_window(browser)
            browser.get(s.api + "/console#supervisor")
            visible(browser, "#token").send_keys(lead)
            click(browser, "#login-form button")
            visible(browser, "#who", "supervisor")
            visible(browser, "#nav-supervisor.current")
            assert not displayed(browser, "#agent-view")
            # The queue says why it waits: nobody eligible, and the first blocking requirement.
            assert "speaks fr" in read(browser, "#queues tbody tr .blocking", "fr")
            assert "0 online of 0" in read(browser, "#queues tbody tr", "fr")
            visible(browser, "#agents td", "Bruno")
            visible(browser, f'#open-conversations tr[data-id="{french}"]')
            visible(browser, f'#open-conversations tr[data-id="{english}"]', "offered")
            screenshot(browser, tmp_path, "supervisor")

        await in_thread(look)

        def move_the_french_one_to_bruno() -> None:
            from selenium.webdriver.support.ui import Select

            row = f'#open-conversations tr[data-id="{french}"]'
            click(browser, row + " select.move-to")  # its choices are made when it is first used
            Select(visible(browser, row + " select.move-to")).select_by_value("agent:bruno")
            click(browser, row + " button.move")
            visible(browser, "#sup-message", f"Moved {french} to agent bruno")

        await in_thread(move_the_french_one_to_bruno)
        moved = await eventually(lambda: s.conversation(french))
        await eventually(lambda: s.conversation(french, "offered"))
        assert moved["transfer_count"] == 1

        def set_bruno_away() -> None:
            from selenium.webdriver.support.ui import Select

            Select(visible(browser, '#agents tr[data-id="bruno"] select.set-status')).select_by_value("away")
            visible(browser, "#sup-message", "bruno is away")
            visible(browser, '#agents tr[data-id="bruno"] td.status', "away")

        await in_thread(set_bruno_away)
        _, bruno = await s.call("GET", "/v1/agents/bruno")
        assert bruno["status"] == "away"

        # The supervisor is also an agent: her own workspace is one click away.
        await in_thread(lambda: click(browser, "#nav-work"))
        await in_thread(lambda: visible(browser, f'#offers li[data-id="{english}"]'))

        def a_plain_agent_has_no_supervisor_page() -> None:
            click(browser, "#logout")
            visible(browser, "#token").send_keys(agent)
            click(browser, "#login-form button")
            visible(browser, "#who", "Bruno")
            browser.get(s.api + "/console#supervisor")
            visible(browser, "#who", "Bruno")
            visible(browser, "#agent-view")
            assert not displayed(browser, "#supervisor-view") and not displayed(browser, "#nav")

        await in_thread(a_plain_agent_has_no_supervisor_page)


async def test_a_supervisor_keeps_the_teams_canned_replies_in_the_page(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        status, issued = await s.call("POST", "/v1/agents/ava/tokens", body={"role": "supervisor"})
        assert status == 201, issued
        lead = issued["token"]

        def add_one() -> None:
            fit_window(browser)
            browser.get(s.api + "/console#supervisor")
            visible(browser, "#token").send_keys(lead)
            click(browser, "#login-form button")
            visible(browser, "#nav-supervisor.current")
            visible(browser, "#canned-id").send_keys("refund-sent")
            visible(browser, "#canned-title").send_keys("Refund sent")
            visible(browser, "#canned-text").send_keys("Hi {customer.name}, your refund is on its way.")
            click(browser, "#canned-form button")
            visible(browser, "#canned-message", "Saved canned reply refund-sent.")
            visible(browser, '#canned-replies tr[data-id="refund-sent"] td', "Refund sent")

        await in_thread(add_one)
        _, listed = await s.call("GET", "/v1/canned-replies")
        assert [(r["id"], r["source"]) for r in listed["canned_replies"]] == [("refund-sent", "team")]

        def a_placeholder_nobody_knows_is_refused_then_the_reply_is_removed() -> None:
            click(browser, '#canned-replies tr[data-id="refund-sent"] button.edit-canned')
            text = visible(browser, "#canned-text")
            text.clear()
            text.send_keys("Hi {customer.email}")
            click(browser, "#canned-form button")
            assert "unknown placeholder {customer.email}" in read(browser, "#canned-message", "placeholder")
            click(browser, '#canned-replies tr[data-id="refund-sent"] button.remove-canned')
            visible(browser, "#canned-message", "Removed canned reply refund-sent.")

        await in_thread(a_placeholder_nobody_knows_is_refused_then_the_reply_is_removed)
        _, listed = await s.call("GET", "/v1/canned-replies")
        assert listed["canned_replies"] == []
