"""The agent sees on the console that a reply has not gone out: while no outcome is recorded
(the provider is slow, down or throttling) it says "Not sent yet", and a reply that failed says
"Not delivered" with the reason, on the reply itself (found by an outage audit: such a reply
looked like any other, its "delivery failed" folded away among the system facts)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.model import DeliveryFailed, MessageSent, ReplyRequested
from events.store import Append
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import fit_window, open_message
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, visible

pytestmark = [pytest.mark.integration, needs_chromium]


async def test_a_reply_not_sent_yet_and_one_that_failed_say_so_on_the_reply(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats) as s:
        token, _ = await s.issue_token("ava")
        customer, cid = "cu-maria", "cv-email-7"  # an email: assigned at once
        await open_message(
            s.store, customer, cid, channel="email", contact="email:maria@example.com", sender="Maria",
            subject="Refund", text="Where is my refund?",
        )  # fmt: skip
        await eventually(lambda: s.conversation(cid, "assigned"))

        def two_replies() -> None:
            fit_window(browser)
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(token)
            click(browser, "#login-form button")
            click(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, "#timeline li.in", "Where is my refund?", timeout=20)
            for text in ("It went out on Monday.", "You will have it by Friday."):
                visible(browser, "#reply-text").send_keys(text)
                click(browser, "#send")
                visible(browser, "#timeline li.out", text, timeout=20)
            # No connector runs here: neither has an outcome yet.
            visible(browser, "#timeline li.out.waiting .outcome", "Not sent yet")

        await in_thread(two_replies)

        first, second = [stored.event for stored in await s.log(customer) if isinstance(stored.event, ReplyRequested)]
        now = datetime.now(UTC)
        common = {"at": now, "customer_id": customer, "conversation_id": cid, "channel": "email"}
        reason = "smtp relay unreachable (after 4 attempts)"
        await s.store.append(Append(DeliveryFailed(**common, reply_id=first.reply_id, reason=reason)))
        await s.store.append(Append(MessageSent(**common, reply_id=second.reply_id, provider_message_id="<m2@x>")))

        def outcomes_shown() -> None:
            failed = visible(browser, "#timeline li.out.failed", "It went out on Monday.", timeout=20)
            assert "Not delivered: smtp relay unreachable (after 4 attempts)" in failed.text
            sent = visible(browser, "#timeline li.out", "You will have it by Friday.")
            assert "Not" not in sent.text.replace("You will have it by Friday.", "")
            classes = browser.execute_script(
                "return [...document.querySelectorAll('#timeline li.out')].map((n) => n.className)"
            )
            assert classes == ["out failed", "out"]

        await in_thread(outcomes_shown)
