"""The agent console in a real browser (headless Chromium: see tests/browser.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from events.model import OfferAccepted, ReplyRequested
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import API_TOKEN, agent_system, agents_config, eventually

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, needs_chromium]


def visible(driver: Any, css: str, text: str | None = None, timeout: float = 15.0) -> Any:
    def found(d: Any) -> Any:
        for node in d.find_elements(By.CSS_SELECTOR, css):
            if node.is_displayed() and (text is None or text in node.text):
                return node
        return False

    # The work lists are re-rendered as the stream brings news: a node found may go stale.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(found, f"no visible {css} with {text!r}")


def read(driver: Any, css: str, text: str | None = None, *, attribute: str = "", timeout: float = 15.0) -> str:
    """The text (or ``attribute``) of the visible node ``visible`` finds, read inside the same
    wait: a node re-rendered between finding and reading (the work lists, the queue table and
    the timeline redraw as news comes) is found again, not a stale reference (a CI failure)."""

    def value(d: Any) -> Any:
        node = visible(d, css, text, timeout=timeout)
        got = node.get_attribute(attribute) if attribute else node.text
        return got if got is not None else ""

    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return str(wait.until(value, f"could not read {css}"))


def displayed(driver: Any, css: str) -> bool:
    """Whether any node matching ``css`` is on screen (a missing one is not)."""
    return any(node.is_displayed() for node in driver.find_elements(By.CSS_SELECTOR, css))


def gone(driver: Any, css: str, timeout: float = 15.0) -> None:
    """Wait until no node matching ``css`` is on screen (the page redraws after a click)."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    wait.until(lambda d: not displayed(d, css), f"{css} still visible")


def click(driver: Any, css: str, timeout: float = 15.0) -> None:
    def clicked(d: Any) -> bool:
        visible(d, css, timeout=timeout).click()
        return True

    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    wait.until(clicked, f"could not click {css}")


async def test_an_agent_accepts_an_offer_and_replies_in_the_console(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        customer, cid = await s.open(text="my invoice is wrong")
        await eventually(lambda: s.conversation(cid, "offered"))

        def log_in_and_accept() -> None:
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(token)
            click(browser, "#login-form button")
            visible(browser, "#who", "Ava")
            click(browser, f'#offers li[data-id="{cid}"]')
            click(browser, "#accept")
            visible(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, "#message", "Accepted.")
            visible(browser, "#live.on")  # the live stream is connected

        await in_thread(log_in_and_accept)
        conv = await eventually(lambda: s.conversation(cid, "assigned"))
        assert conv["agent_id"] == "ava"

        def see_timeline_and_reply() -> None:
            visible(browser, "#timeline li", "my invoice is wrong", timeout=20)
            visible(browser, "#reply-text").send_keys("Sorry about that, fixing it now.")
            click(browser, "#send")
            visible(browser, "#message", "Reply sent.")

        await in_thread(see_timeline_and_reply)

        async def replied() -> ReplyRequested | None:
            for stored in await s.log(customer):
                if isinstance(stored.event, ReplyRequested):
                    return stored.event
            return None

        reply = await eventually(replied)
        assert reply.text == "Sorry about that, fixing it now."
        assert reply.actor == "agent:ava"
        accepted = [e.event for e in await s.log(customer) if isinstance(e.event, OfferAccepted)]
        assert accepted[0].actor == "agent:ava"

        # A new offer shows up live, without a reload, with its countdown and a banner.
        _, second = await s.open()
        await in_thread(lambda: visible(browser, f'#offers li[data-id="{second}"] .countdown', " s"))
        await in_thread(lambda: visible(browser, "#alert", "New offer on sms"))
        # Signed in once per browser: a reload, or a new tab from a Slack or Teams link
        # (#conversation=<id>), opens straight into the work, no token asked.
        await in_thread(browser.refresh)
        await in_thread(lambda: visible(browser, f'#offers li[data-id="{second}"]'))

        def open_link_in_a_new_tab() -> None:
            browser.switch_to.new_window("tab")
            browser.get(s.api + f"/console#conversation={second}")
            visible(browser, "#who", "Ava")
            visible(browser, "#accept")
            visible(browser, f'#offers li.selected[data-id="{second}"]')
            visible(browser, "#countdown", "s left to accept")
            assert not displayed(browser, "#token")

        await in_thread(open_link_in_a_new_tab)
        # The page's scripts never hold the token: the session is an HttpOnly cookie.
        storage = "return JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + document.cookie"
        assert token not in await in_thread(lambda: browser.execute_script(storage))

        # Moved away while she writes: she is told, and her unsent text is shown to copy.
        # (Found by an audit: the conversation vanished without a word, the draft with it.)
        def start_a_draft() -> None:
            click(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, "#reply-text").send_keys("Half-written answer about the invoice")

        await in_thread(start_a_draft)
        status, body = await s.call("POST", f"/v1/conversations/{cid}/transfer", body={"to_agent": "bruno"})
        assert status == 200, body
        notice = await in_thread(lambda: read(browser, "#message", "is no longer yours", timeout=20))
        assert cid in notice and "Half-written answer about the invoice" in notice, notice


async def test_an_operator_sees_queues_and_agents(tmp_path: Path, clean_nats: EmbeddedNats, browser: Any) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        _, cid = await s.open(language="fr")  # nobody speaks French: it waits in a queue
        await eventually(lambda: s.conversation(cid, "waiting"))

        def look() -> None:
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(API_TOKEN)
            click(browser, "#login-form button")
            visible(browser, "#who", "operator")
            visible(browser, "#agents td", "Ava")
            visible(browser, "#queues td", "SMS")
            assert not displayed(browser, "#agent-view")  # an operator has no work list of her own

        await in_thread(look)
