"""An agent's long shift in the console (a real browser): the team's canned replies change
under an open conversation, the session ends while she is writing, the network goes away and
comes back. Found by a shift audit: the list stayed as it was loaded when the conversation
opened; an expired session took her unsent reply with it (and left the API's "missing bearer
token" on the page); what the customer wrote while the page was offline never showed in the
open conversation (its reload had failed, and nothing loaded it again)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.model import MessageReceived, ReplyRequested
from events.store import Append
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import open_message
from .helpers import AgentSystem, agent_system, agents_config, eventually
from .test_console_browser import click, displayed, read, visible

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, needs_chromium]


def canned_titles(driver: Any) -> list[str]:
    return [option.text for option in Select(visible(driver, "#canned")).options]


def until(driver: Any, condition: Any, message: str, timeout: float = 15.0) -> Any:
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(lambda d: condition(), message)


def sign_in(driver: Any, api: str, token: str) -> None:
    driver.get(api + "/console")
    visible(driver, "#token").send_keys(token)
    click(driver, "#login-form button")


def take_and_open(driver: Any, api: str, token: str, cid: str) -> None:
    """Signed in, she accepts the offer of ``cid`` and opens the conversation."""
    sign_in(driver, api, token)
    click(driver, f'#offers li[data-id="{cid}"]')
    click(driver, "#accept")
    click(driver, f'#assigned li[data-id="{cid}"]')


async def offer_for_ava(s: AgentSystem, text: str) -> tuple[str, str, str]:
    """Ava's token and a customer's new conversation (``text``) offered to her: (token, customer, cid)."""
    token, _ = await s.issue_token("ava")
    customer, cid = await s.open(text=text)
    await s.offered_to(cid, "ava")
    return token, customer, cid


def customer_wrote(customer: str, cid: str, text: str) -> Append:
    """What intake appends when the customer writes again in ``cid`` (sms)."""
    return Append(
        MessageReceived(
            at=datetime.now(UTC),
            customer_id=customer,
            conversation_id=cid,
            channel="sms",
            message_id="m-" + uuid.uuid4().hex,
            provider_message_id="SM" + uuid.uuid4().hex,
            text=text,
        )
    )


async def test_the_teams_canned_replies_changed_during_the_shift_reach_an_open_conversation(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _, cid = await offer_for_ava(s, "where is my refund")

        def open_the_conversation() -> None:
            take_and_open(browser, s.api, token, cid)
            visible(browser, "#reply-text")
            until(browser, lambda: canned_titles(browser) == ["none"], "the list is not loaded")

        await in_thread(open_the_conversation)
        # A supervisor adds one while the conversation is open: she finds it when she opens the list.
        status, _ = await s.call("PUT", "/v1/canned-replies/refund", body={"title": "Refund", "text": "Refund sent."})
        assert status == 201

        def pick(title: str) -> str:
            click(browser, "#canned")
            until(browser, lambda: title in canned_titles(browser), f"{title} is not offered: {canned_titles(browser)}")
            Select(visible(browser, "#canned")).select_by_visible_text(title)
            return read(browser, "#reply-text", attribute="value")

        assert await in_thread(pick, "Refund") == "Refund sent."
        # Changed, then removed: she gets the text as it is now, and a removed one is no longer offered.
        status, _ = await s.call(
            "PUT", "/v1/canned-replies/refund", body={"title": "Refund", "text": "Refund sent today."}
        )
        assert status == 200
        await in_thread(lambda: visible(browser, "#reply-text").clear())

        def picks_the_new_text() -> None:
            click(browser, "#reply-text")
            until(browser, lambda: pick("Refund") == "Refund sent today.", "the old text is offered")

        await in_thread(picks_the_new_text)
        status, _ = await s.call("DELETE", "/v1/canned-replies/refund")
        assert status == 200

        def removed() -> None:
            click(browser, "#reply-text")
            click(browser, "#canned")
            until(browser, lambda: "Refund" not in canned_titles(browser), "a removed reply is still offered")

        await in_thread(removed)


async def test_a_reply_written_when_the_session_ended_waits_for_her_next_sign_in(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        ava, _ = await s.issue_token("ava")
        bruno, _ = await s.issue_token("bruno")
        customer, cid = await s.open(text="my parcel never came")
        await s.offered_to(cid, "ava")

        def send_unless_signed_out_already() -> None:
            # The page's own background calls (the timeline's) may meet the ended session first.
            browser.execute_script("document.getElementById('reply-form').requestSubmit()")

        draft = "I checked with the courier: it leaves the depot today"

        def write_when_the_session_has_ended() -> None:
            take_and_open(browser, s.api, ava, cid)
            visible(browser, "#reply-text").send_keys(draft)
            browser.delete_cookie("relaydesk_session")  # 12 hours are up (or it ended elsewhere)
            send_unless_signed_out_already()
            visible(browser, "#login-error", "Your session ended")
            # Signed out, the page shows nothing of hers: not the draft, not the API's raw refusal.
            assert draft not in browser.find_element("tag name", "body").text
            assert browser.execute_script("return document.getElementById('reply-text').value") == ""
            assert browser.execute_script("return document.getElementById('message').textContent") == ""

        await in_thread(write_when_the_session_has_ended)

        def sign_in_again() -> None:
            visible(browser, "#token").send_keys(ava)
            click(browser, "#login-form button")
            visible(browser, f'#assigned li.selected[data-id="{cid}"]')
            until(browser, lambda: read(browser, "#reply-text", attribute="value") == draft, "the draft is not back")
            visible(browser, "#message", "unsent text is back")
            assert "bearer" not in read(browser, "#message")
            click(browser, "#send")
            visible(browser, "#message", "Reply sent.")

        await in_thread(sign_in_again)

        async def replied() -> ReplyRequested | None:
            replies = [e.event for e in await s.log(customer) if isinstance(e.event, ReplyRequested)]
            return replies[0] if replies else None

        assert (await eventually(replied)).text == draft

        def someone_else_signs_in_next() -> None:
            visible(browser, "#reply-text").send_keys("a second draft")
            browser.delete_cookie("relaydesk_session")
            send_unless_signed_out_already()
            visible(browser, "#login-error", "Your session ended")
            visible(browser, "#token").send_keys(bruno)
            click(browser, "#login-form button")
            visible(browser, "#who", "Bruno")
            assert "a second draft" not in browser.find_element("tag name", "body").text
            assert browser.execute_script("return document.getElementById('reply-text').value") == ""

        await in_thread(someone_else_signs_in_next)


async def test_what_the_customer_wrote_while_the_page_was_offline_shows_when_it_is_back(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, customer, cid = await offer_for_ava(s, "first words")

        def open_the_conversation() -> None:
            take_and_open(browser, s.api, token, cid)
            visible(browser, "#timeline li", "first words")
            visible(browser, "#live.on")
            browser.execute_cdp_cmd("Network.enable", {})
            offline(True)

        def offline(yes: bool) -> None:
            conditions = {"offline": yes, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
            browser.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)

        await in_thread(open_the_conversation)
        await s.store.append(customer_wrote(customer, cid, "second words, while you were offline"))

        def back_online() -> None:
            # The news reached the page, and loading the timeline for it failed: offline.
            visible(browser, "#message", "Timeline:", timeout=20)
            offline(False)
            visible(browser, "#timeline li", "second words, while you were offline", timeout=20)
            visible(browser, f'#assigned li[data-id="{cid}"]', "second words")
            visible(browser, "#live.on")

        await in_thread(back_online)


async def test_a_customer_with_a_long_history_shows_the_newest_messages(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """The timeline comes in pages of at most 1000 entries, oldest first: the console read only
    the first page, so past 1000 entries the open conversation never showed what was new."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, customer, cid = await offer_for_ava(s, "first words")

        for start in range(0, 1000, 100):
            lines = (customer_wrote(customer, cid, f"line {n}") for n in range(start, start + 100))
            await asyncio.gather(*(s.store.append(line) for line in lines))
        await s.store.append(customer_wrote(customer, cid, "the newest words"))

        async def projected() -> bool:
            _, page = await s.call("GET", f"/v1/customers/{customer}/timeline?limit=1000")
            if page["next_after"] is None:
                return False
            _, rest = await s.call("GET", f"/v1/customers/{customer}/timeline?limit=1000&after={page['next_after']}")
            return any(e.get("text") == "the newest words" for e in rest["entries"])

        await eventually(projected, timeout=30)

        def open_the_conversation() -> None:
            sign_in(browser, s.api, token)
            click(browser, f'#offers li[data-id="{cid}"]')
            visible(browser, "#timeline li", "the newest words", timeout=20)

        await in_thread(open_the_conversation)


async def test_an_offer_left_open_until_it_expires_says_so(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """She opens an offer and does not answer it: when it expires the page says the offer
    ended, not that a conversation of hers was transferred, resolved or taken back."""
    config = agents_config(tmp_path, clean_nats.url)
    config.router = msgspec.structs.replace(config.router, offer_timeout_seconds=4.0)
    async with agent_system(config, clean_nats) as s:
        token, _, cid = await offer_for_ava(s, "anyone there?")

        def let_it_expire() -> None:
            sign_in(browser, s.api, token)
            click(browser, f'#offers li[data-id="{cid}"]')
            visible(browser, "#accept")
            notice = read(browser, "#message", "offer of conversation", timeout=30)
            assert cid in notice and "expired" in notice and "no longer yours" not in notice, notice
            assert not displayed(browser, "#accept")

        await in_thread(let_it_expire)


async def test_a_reply_sent_again_after_its_answer_was_lost_goes_once(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """The network drops the answer to her reply (it reached the API): she sends it again, and
    the customer gets it once. The page's fetch loses the first /reply answer on purpose."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, customer, cid = await offer_for_ava(s, "did you get my photo?")
        lose_one_answer = """
            const real = window.fetch;
            window.__lost = 0;
            window.fetch = async (url, init) => {
              const r = await real(url, init);
              if (String(url).endsWith('/reply') && window.__lost === 0) {
                window.__lost = 1;
                throw new TypeError('Failed to fetch');
              }
              return r;
            };"""

        def reply_twice() -> None:
            take_and_open(browser, s.api, token, cid)
            browser.execute_script(lose_one_answer)
            visible(browser, "#reply-text").send_keys("Yes, it came through, thanks.")
            click(browser, "#send")
            visible(browser, "#message", "Failed to fetch")
            assert read(browser, "#reply-text", attribute="value") == "Yes, it came through, thanks."
            click(browser, "#send")
            visible(browser, "#message", "Reply sent.")

        await in_thread(reply_twice)

        async def replies() -> list[ReplyRequested]:
            return [e.event for e in await s.log(customer) if isinstance(e.event, ReplyRequested)]

        # Both sends were answered (the API answers once the reply is on the log): a second one
        # would be there by now.
        assert [r.text for r in await replies()] == ["Yes, it came through, thanks."]


async def test_two_tabs_follow_a_sign_in_and_a_log_out_in_either(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """The tabs of a browser share one session cookie: a tab left showing Ava's work after Bruno
    signed in in another acted as Bruno; one left open after Log out kept showing the work."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        ava, _ = await s.issue_token("ava")
        bruno, _ = await s.issue_token("bruno")
        _, cid = await s.open(text="hello from a customer")
        await s.offered_to(cid, "ava")

        def two_tabs() -> None:
            sign_in(browser, s.api, ava)
            visible(browser, f'#offers li[data-id="{cid}"]')
            first = browser.current_window_handle
            browser.switch_to.new_window("tab")
            browser.get(s.api + "/console")
            visible(browser, "#who", "Ava")
            click(browser, "#logout")
            visible(browser, "#token").send_keys(bruno)
            click(browser, "#login-form button")
            visible(browser, "#who", "Bruno")
            second = browser.current_window_handle
            browser.switch_to.window(first)
            visible(browser, "#who", "Bruno")  # the first tab is Bruno's now too
            assert not displayed(browser, f'#offers li[data-id="{cid}"]')
            click(browser, "#logout")
            visible(browser, "#token")
            browser.switch_to.window(second)
            visible(browser, "#token")  # logged out here too: nothing of Bruno's stays on screen
            assert not displayed(browser, "#agent-view")
            assert browser.execute_script("return document.getElementById('who').textContent") == ""

        await in_thread(two_tabs)


async def test_the_supervisor_reads_a_wait_of_hours_in_hours(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """A queue's oldest wait read "10800 s" after three hours; it reads "3 h"."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        for agent in ("ava", "bruno"):
            status, _ = await s.call("POST", f"/v1/agents/{agent}/status", body={"status": "away"})
            assert status == 200
        status, issued = await s.call("POST", "/v1/agents/ava/tokens", body={"role": "supervisor"})
        assert status == 201, issued
        three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
        await open_message(
            s.store, "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10], channel="sms",
            contact="+15550001234", sender="Olga", text="still waiting", at=three_hours_ago,
        )  # fmt: skip

        def look() -> None:
            browser.get(s.api + "/console#supervisor")
            visible(browser, "#token").send_keys(issued["token"])
            click(browser, "#login-form button")
            row = read(browser, "#queues tbody tr", "3 h", timeout=20)
            assert "10800" not in row, row

        await in_thread(look)


async def test_an_unsent_reply_stays_with_its_conversation_across_switches_and_a_reload(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """Found by a shift audit: opening another conversation emptied the box, and a reload lost
    what she was writing. Log out drops it (a shared desk)."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        ava, _ = await s.issue_token("ava")
        _, first = await s.open(text="where is my parcel")
        await s.offered_to(first, "ava")
        _, second = await s.open(text="my invoice is wrong")
        await s.offered_to(second, "ava")

        def box() -> str:
            return str(browser.execute_script("return document.getElementById('reply-text').value"))

        def open_conversation(cid: str) -> None:
            click(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, f'#assigned li.selected[data-id="{cid}"]')

        def write_in_both_then_reload() -> None:
            take_and_open(browser, s.api, ava, first)
            click(browser, f'#offers li[data-id="{second}"]')
            click(browser, "#accept")
            open_conversation(first)
            visible(browser, "#reply-text").send_keys("the parcel leaves today")
            open_conversation(second)
            until(browser, lambda: box() == "", "the first draft showed in the second conversation")
            visible(browser, "#reply-text").send_keys("a refund is on its way")
            open_conversation(first)
            until(browser, lambda: box() == "the parcel leaves today", "the first draft is gone")
            browser.refresh()
            visible(browser, "#who", "Ava")
            open_conversation(second)
            until(browser, lambda: box() == "a refund is on its way", "the reload lost the draft")
            click(browser, "#logout")
            visible(browser, "#token").send_keys(ava)
            click(browser, "#login-form button")
            visible(browser, "#who", "Ava")
            open_conversation(second)
            until(browser, lambda: box() == "", "a draft outlived Log out")

        await in_thread(write_in_both_then_reload)
