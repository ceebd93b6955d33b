"""The agent's workspace in a real browser: who the customer is, the email's subject and a
preview, an offer's countdown, the conversation with notes and collapsed system facts, the
customer panel, canned replies, internal notes, attachments and transfer from a pick list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from events.model import Attachment, NoteAdded, ReplyRequested
from services.api.console_settings import CannedReply, ConsoleSettings
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import create_customer, fit_window, open_message, screenshot
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, gone, read, visible

pytestmark = [pytest.mark.integration, needs_chromium]

CANNED = (
    CannedReply(id="refund", title="Refund on its way", text="Hi {customer.name}, your refund is on its way."),
    CannedReply(id="thanks", title="Thanks for waiting", text="Thanks for waiting, {customer.name}."),
)


async def test_an_agent_works_an_email_with_the_customer_panel_notes_and_canned_replies(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    config.console = ConsoleSettings(canned_replies=CANNED, crm_url_template="https://crm.example.com/c/{crm_id}")
    async with agent_system(config, clean_nats) as s:
        token, _ = await s.issue_token("ava")
        # An earlier conversation, in Spanish with Bruno, resolved (the customer panel lists it).
        customer, earlier = await s.open(language="es", text="¿dónde está mi paquete?")
        await create_customer(s.store, customer, "email:maria.lopez@example.com")
        await eventually(lambda: s.conversation(earlier, "offered"))
        assert (await s.call("POST", f"/v1/conversations/{earlier}/accept"))[0] == 200
        assert (await s.call("POST", f"/v1/conversations/{earlier}/resolve"))[0] == 200
        status, _ = await s.call(
            "PUT", f"/v1/customers/{customer}", body={"tier": "gold", "crm_id": "CRM-1042", "name": "Maria Lopez"}
        )
        assert status == 200
        cid = "cv-email-1042"  # an email: assigned at once
        await open_message(
            s.store,
            customer,
            cid,
            channel="email",
            contact="email:maria.lopez@example.com",
            sender="Maria L.",
            subject="Invoice 1042 charged twice",
            text="Hello, my invoice 1042 was charged twice this month. Statement attached.",
            attachment=Attachment(
                url="https://mail.example/att/1", content_type="application/pdf", name="statement.pdf", size=2048
            ),
        )
        await eventually(lambda: s.conversation(cid, "assigned"))

        def signed_in() -> None:
            fit_window(browser)
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(token)
            click(browser, "#login-form button")
            item = visible(browser, f'#assigned li[data-id="{cid}"]')
            # Who and what, not an id: name, masked address, subject, preview, channel.
            assert "Maria Lopez" in item.text
            assert "m•••@example.com" in item.text
            assert "Invoice 1042 charged twice" in item.text
            assert "charged twice this month" in item.text
            assert "maria.lopez@example.com" not in browser.page_source
            visible(browser, f'#assigned li[data-id="{cid}"] .ch-email')
            visible(browser, "#live.on")

        await in_thread(signed_in)

        # A chat message is offered: it arrives live with a countdown and a banner.
        offered = "cv-sms-0142"
        await open_message(
            s.store, "cu-tom", offered, channel="sms", contact="phone:+15551230142", sender="Tom Baker",
            text="Hi, I was double charged too, can someone help?",
        )  # fmt: skip

        def an_offer_arrives() -> None:
            offer = visible(browser, f'#offers li[data-id="{offered}"]', timeout=20)
            assert "Tom Baker" in offer.text and "double charged" in offer.text
            first = int(read(browser, f'#offers li[data-id="{offered}"] .countdown', " s").split()[0])
            assert 0 < first <= 60
            visible(browser, "#alert", "New offer on sms")
            click(browser, f'#offers li[data-id="{offered}"]')
            visible(browser, "#countdown", "s left to accept")
            visible(browser, "#timeline li.in", "double charged", timeout=20)
            screenshot(browser, tmp_path, "workspace-offer")

        await in_thread(an_offer_arrives)

        def read_the_email() -> None:
            click(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, "#conv-subject", "Invoice 1042 charged twice")
            visible(browser, "#timeline li.in", "charged twice this month", timeout=20)
            # System facts are one collapsed line, not messages.
            visible(browser, "#timeline li.facts summary", "routing requested")
            # Read in one script (atomic): the timeline redraws as news comes (no stale nodes).
            summary = "document.querySelector('#timeline li.facts summary')"
            assert browser.execute_script(f"return {summary}.parentElement.open") is False
            rows = "document.querySelectorAll('#timeline li.in, #timeline li.out')"
            texts = browser.execute_script(f"return [...{rows}].map((n) => n.textContent)")
            assert texts and not any("routing requested" in text for text in texts)
            link = read(browser, "#timeline li.in a.attachment", "statement.pdf", attribute="href")
            assert "/v1/attachments/" in link
            # The customer panel: profile, tier, CRM link, identities, the earlier conversation.
            visible(browser, "#cust-name", "Maria Lopez")
            visible(browser, "#cust-tier .tier", "gold")
            crm = visible(browser, "#cust-facts a", "CRM-1042")
            assert crm.get_attribute("href") == "https://crm.example.com/c/CRM-1042"
            visible(browser, "#cust-history li", "resolved")

        await in_thread(read_the_email)

        def canned_reply_then_a_note() -> None:
            from selenium.webdriver.support.ui import Select

            visible(browser, "#canned option", "Refund on its way")
            Select(visible(browser, "#canned")).select_by_visible_text("Refund on its way")
            assert (
                visible(browser, "#reply-text").get_attribute("value") == "Hi Maria Lopez, your refund is on its way."
            )
            click(browser, "#send")
            visible(browser, "#message", "Reply sent.")
            visible(browser, "#timeline li.out", "your refund is on its way", timeout=20)
            visible(browser, "#reply-text").send_keys("Checked the ledger: a duplicate capture, refunded.")
            click(browser, "#add-note")
            visible(browser, "#message", "Note added")
            visible(browser, "#timeline li.note", "duplicate capture", timeout=20)
            screenshot(browser, tmp_path, "workspace-conversation")

        await in_thread(canned_reply_then_a_note)

        log = [stored.event for stored in await s.log(customer)]
        replies = [e for e in log if isinstance(e, ReplyRequested)]
        notes = [e for e in log if isinstance(e, NoteAdded)]
        assert [r.text for r in replies] == ["Hi Maria Lopez, your refund is on its way."]
        assert [n.text for n in notes] == ["Checked the ledger: a duplicate capture, refunded."]
        assert notes[0].actor == "agent:ava"

        def transfer_from_the_list() -> None:
            from selenium.webdriver.support.ui import Select

            click(browser, "#move summary")
            Select(visible(browser, "#to-agent")).select_by_visible_text("Bruno (available)")
            visible(browser, "#note").send_keys("Bruno handles refunds")
            click(browser, "#transfer-form button")
            visible(browser, "#message", "Transferred.")
            gone(browser, f'#assigned li[data-id="{cid}"]')  # the list redraws when the stream says so

        await in_thread(transfer_from_the_list)
        moved = await eventually(lambda: s.conversation(cid))
        assert moved["agent_id"] != "ava"
