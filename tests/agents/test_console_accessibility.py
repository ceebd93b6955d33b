"""The agent console with a keyboard and a screen reader (headless Chromium: see tests/browser.py).

Found by an accessibility audit (WCAG 2.2 AA): the offers and assigned conversations were bare
list items taking a mouse click only (2.1.1), the new-offer banner was a role=alert whose text
changed every second (a screen reader read it each second) while an offer's end was never said
(2.2.1, 4.1.2), a customer's new message in the open conversation was not announced (4.1.3),
the focus fell to the top of the page when Accept hid itself (2.4.3), and fields named only by a
placeholder (3.3.2, 4.1.2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.model import MessageReceived
from events.store import Append
from router.policy import FORGIVE_DECLINES, EscalationStep
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, read, visible

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, needs_chromium]

# Every text written to the page's live regions, in order (a later one may replace an earlier
# one before the test reads it): what a screen reader would have said.
LISTEN = """
window.__heard = [];
const regions = document.querySelectorAll('[aria-live], [role=status], [role=alert], [role=log]');
for (const region of regions) {
  new MutationObserver(() => {
    const text = region.textContent.trim();
    if (text) window.__heard.push([region.id, text]);
  }).observe(region, {childList: true, subtree: true, characterData: true});
}
"""


def heard(driver: Any, region: str, words: str, timeout: float = 20.0) -> str:
    def said(d: Any) -> Any:
        for where, text in d.execute_script("return window.__heard"):
            if where == region and words in text:
                return text
        return False

    return str(WebDriverWait(driver, timeout, poll_frequency=0.1).until(said, f"#{region} never said {words!r}"))


def has_focus(driver: Any, css: str) -> bool:
    """Whether the focused element matches ``css`` (asked of the page: the work lists are drawn
    anew as news comes, so a node found earlier may be stale while its successor has the focus)."""
    return bool(driver.execute_script("return document.activeElement.matches(arguments[0])", css))


def tab_to(driver: Any, css: str, most: int = 6) -> None:
    """Tab (only Tab) until the element ``css`` has the focus, in at most ``most`` presses."""
    for _ in range(most):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if has_focus(driver, css):
            return
    at = driver.execute_script("return document.activeElement.outerHTML.slice(0, 120)")
    raise AssertionError(f"{most} Tabs did not reach {css} (at {at})")


def log_in_by_keyboard(driver: Any, url: str, token: str) -> None:
    driver.get(url + "/console")
    visible(driver, "#token")
    # The sign-in form has the focus: type and press Enter.
    assert has_focus(driver, "#token")
    ActionChains(driver).send_keys(token + Keys.ENTER).perform()
    visible(driver, "#live.on")
    driver.execute_script(LISTEN)


def unnamed_controls(driver: Any) -> list[str]:
    """Visible form fields and buttons a screen reader would announce without a name."""

    def look(d: Any) -> list[str]:
        missing = []
        for node in d.find_elements(By.CSS_SELECTOR, "input, select, textarea, button, a[href], summary"):
            if node.is_displayed() and not (node.accessible_name or "").strip():
                missing.append(node.get_attribute("outerHTML")[:120])
        return missing

    wait = WebDriverWait(driver, 10, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    # A node redrawn while it is looked at is looked at again (a one-item tuple: truthy even when empty).
    return list(wait.until(lambda d: (look(d),), "could not look at the controls")[0])


async def test_an_agent_works_an_offer_with_the_keyboard_and_hears_the_news(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        await in_thread(log_in_by_keyboard, browser, s.api, token)
        assert await in_thread(lambda: browser.find_element(By.ID, "live").accessible_name) == "live stream: connected"

        customer, cid = await s.open(text="my parcel never came")
        await eventually(lambda: s.conversation(cid, "offered"))
        # The offer is said once, assertively; the banner that counts down each second is no live region.
        said = await in_thread(heard, browser, "announce-offer", "New offer on sms")
        assert "seconds to accept" in said, said
        banner = await in_thread(lambda: browser.find_element(By.ID, "alert"))
        assert await in_thread(banner.get_attribute, "role") is None
        assert await in_thread(banner.get_attribute, "aria-live") is None
        region = await in_thread(lambda: browser.find_element(By.ID, "announce-offer"))
        assert await in_thread(region.get_attribute, "aria-live") == "assertive"
        await in_thread(lambda: visible(browser, "#alert", "New offer on sms"))

        def open_and_accept_by_keyboard() -> None:
            # Tab from "New conversation" reaches the offer; Enter opens it (the focus stays on it).
            browser.execute_script("document.getElementById('new-open').focus()")
            tab_to(browser, f'#offers li[data-id="{cid}"] button.pick', most=1)
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            visible(browser, "#accept")
            assert has_focus(browser, f'#offers li[data-id="{cid}"] button.pick[aria-current="true"]')
            tab_to(browser, "#accept")
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            visible(browser, "#message", "Accepted.")
            # Accept hides itself: the focus goes on to the reply box, not to the top of the page.
            WebDriverWait(browser, 10, poll_frequency=0.1).until(
                lambda d: has_focus(d, "#reply-text"), "the reply box did not get the focus"
            )
            visible(browser, "#timeline li", "my parcel never came")
            assert unnamed_controls(browser) == []
            ActionChains(browser).send_keys("On its way again today.").perform()
            tab_to(browser, "#send", most=3)
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            visible(browser, "#message", "Reply sent.")

        await in_thread(open_and_accept_by_keyboard)
        await eventually(lambda: s.conversation(cid, "assigned"))

        # The customer writes again: said politely, and the focus stays where the agent is.
        await in_thread(lambda: browser.find_element(By.ID, "reply-text").click())
        conv = await s.conversation(cid)
        assert conv is not None
        await s.store.append(
            Append(
                MessageReceived(
                    at=datetime.now(UTC),
                    customer_id=customer,
                    conversation_id=cid,
                    channel="sms",
                    message_id="m-" + uuid.uuid4().hex[:8],
                    provider_message_id="p-" + uuid.uuid4().hex[:8],
                    text="still nothing at the door",
                    language="en",
                )
            )
        )
        said = await in_thread(heard, browser, "announce-message", "still nothing at the door")
        assert "wrote:" in said, said
        region = await in_thread(lambda: browser.find_element(By.ID, "announce-message"))
        assert await in_thread(region.get_attribute, "role") == "status"
        assert await in_thread(has_focus, browser, "#reply-text")
        # What she had opened was not announced again (only the new message).
        texts = [
            t
            for where, t in await in_thread(browser.execute_script, "return window.__heard")
            if where == "announce-message"
        ]
        assert not any("my parcel never came" in t for t in texts), texts

        # Resolve: the conversation leaves, the focus goes to the work lists (here: New conversation).
        def resolve_by_keyboard() -> None:
            browser.execute_script("document.getElementById('resolve').focus()")
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            visible(browser, "#message", "Resolved.")
            WebDriverWait(browser, 10, poll_frequency=0.1).until(
                lambda d: has_focus(d, "#new-open"), "the focus was lost after Resolve"
            )

        await in_thread(resolve_by_keyboard)

        def new_conversation_fields_are_named() -> None:
            click(browser, "#new-open")
            visible(browser, "#new-address")
            assert unnamed_controls(browser) == []
            assert read(browser, "#new-address", attribute="aria-label") == "address"

        await in_thread(new_conversation_fields_are_named)


async def test_an_offer_running_out_is_said_before_and_when_it_ends(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    config.router = msgspec.structs.replace(config.router, offer_timeout_seconds=14.0)
    async with agent_system(config, clean_nats) as s:
        token, _ = await s.issue_token("ava")
        await in_thread(log_in_by_keyboard, browser, s.api, token)
        _, cid = await s.open(text="anyone there?")
        await s.offered_to(cid, "ava")
        await in_thread(heard, browser, "announce-offer", "New offer on sms")
        # Once, before the time runs out (not every second), and again when it has.
        warned = await in_thread(heard, browser, "announce-offer", "seconds left to accept", 20.0)
        assert "Offer from" in warned, warned
        await in_thread(heard, browser, "announce-offer", "has ended", 20.0)
        texts = [
            t
            for where, t in await in_thread(browser.execute_script, "return window.__heard")
            if where == "announce-offer"
        ]
        assert sum("seconds left to accept" in t for t in texts) == 1, texts


async def test_the_same_conversation_offered_again_is_announced_again(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """An offer was known by its conversation alone: offered to her again after the first offer
    ran out, it came without a word (found by the accessibility audit)."""
    config = agents_config(tmp_path, clean_nats.url)
    # She lets it run out (12 s: long enough to be said as new before its last seconds are);
    # after 14 s of waiting the router may offer it to her again.
    again = (EscalationStep(after_seconds=14, relaxation=FORGIVE_DECLINES),)
    config.router = msgspec.structs.replace(
        config.router, offer_timeout_seconds=12.0, expiries_before_away=0, escalation_steps=again
    )
    async with agent_system(config, clean_nats) as s:
        token, _ = await s.issue_token("ava")
        await in_thread(log_in_by_keyboard, browser, s.api, token)
        _, cid = await s.open(text="anyone there?")
        await s.offered_to(cid, "ava")

        def offered_twice() -> None:
            def count(d: Any) -> Any:
                texts = [t for where, t in d.execute_script("return window.__heard") if where == "announce-offer"]
                return sum("New offer on sms" in t for t in texts) >= 2

            WebDriverWait(browser, 45, poll_frequency=0.2).until(count, "the second offer was never announced")

        await in_thread(offered_twice)
