"""Issue 13 in the console, in a real browser: an agent starts a conversation (to a typed
address, or to the open conversation's customer), attaches files to a reply (the channel's
limits shown when a file does not fit), and on WhatsApp outside the 24-hour window can send
only a template (inside it, text or a template)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.model import ConversationAssigned, ConversationOpened, ReplyRequested
from services.api.templates import TemplateSettings, values_of
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import create_customer, fit_window, open_message, screenshot
from .helpers import AgentSystem, agent_system, agents_config, eventually
from .test_console_browser import click, displayed, gone, read, visible

pytestmark = [pytest.mark.integration, needs_chromium]

ORDER_UPDATE = TemplateSettings(
    name="order_update",
    language="en_US",
    parameters=("customer", "order"),
    body="Hi {{1}}, your order {{2}} has shipped.",
)
# The smallest valid PNG (1×1, transparent).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082"
)


def sign_in(browser: Any, api: str, token: str) -> None:
    fit_window(browser)
    browser.get(api + "/console")
    visible(browser, "#token").send_keys(token)
    click(browser, "#login-form button")
    visible(browser, "#live.on")


async def accepted_by_ava(s: AgentSystem, token: str, cid: str) -> None:
    """A live-channel conversation is offered first (to Ava: Bruno speaks Spanish); she takes it."""
    await eventually(lambda: s.conversation(cid, "offered"))
    status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", token=token)
    assert status == 200, body
    await eventually(lambda: s.conversation(cid, "assigned"))


def replies(log: list[Any]) -> list[ReplyRequested]:
    return [stored.event for stored in log if isinstance(stored.event, ReplyRequested)]


async def test_an_agent_starts_conversations_to_an_address_and_to_the_current_customer(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")

        def text_a_new_number() -> str:
            sign_in(browser, s.api, token)
            click(browser, "#new-open")
            assert not displayed(browser, "#new-subject")  # a subject is for email only
            visible(browser, "#new-address").send_keys("+1 555 123 0199")
            visible(browser, "#new-text").send_keys("Your replacement ships today.")
            click(browser, "#new-send")
            visible(browser, "#message", "Conversation started.")
            # It opens at once, hers: no offer, no accept.
            visible(browser, "#conv-title", "(assigned)")
            visible(browser, "#timeline li.out", "Your replacement ships today.", timeout=20)
            assert not displayed(browser, "#new-form")
            return read(browser, "#assigned li.selected", attribute="data-id")

        cid = await in_thread(text_a_new_number)
        conv = await eventually(lambda: s.conversation(cid, "assigned"))
        assert conv["agent_id"] == "ava" and conv["channel"] == "sms"
        sent = replies(await s.log(conv["customer_id"]))
        assert [(r.text, r.agent_id, r.channel) for r in sent] == [("Your replacement ships today.", "ava", "sms")]

        # Maria writes by SMS; her email address is on her profile. Ava writes her an email.
        await create_customer(s.store, "cu-maria", "phone:+15551230142")
        status, body = await s.call(
            "POST", "/v1/customers/cu-maria/identities", body={"identity": "email:maria@example.com"}
        )
        assert status == 200, body
        status, body = await s.call("PUT", "/v1/customers/cu-maria", body={"name": "Maria Lopez"})
        assert status == 200, body
        await open_message(
            s.store, "cu-maria", "cv-maria-sms", channel="sms", contact="+15551230142", sender="Maria",
            text="Can you send me the invoice by email?",
        )  # fmt: skip
        await accepted_by_ava(s, token, "cv-maria-sms")

        def email_the_current_customer() -> str:
            click(browser, '#assigned li[data-id="cv-maria-sms"]')
            visible(browser, "#cust-identities li", "email:maria@example.com")
            click(browser, "#new-open")
            from selenium.webdriver.support.ui import Select

            Select(visible(browser, "#new-channel")).select_by_visible_text("Email")
            # Her own address is picked; no address to type.
            to = Select(visible(browser, "#new-to")).first_selected_option
            assert "Maria Lopez" in to.text and "maria@example.com" in to.text
            assert not displayed(browser, "#new-address")
            visible(browser, "#new-subject").send_keys("Your invoice 1042")
            visible(browser, "#new-text").send_keys("Here is the invoice you asked for.")
            screenshot(browser, tmp_path, "workspace-new-conversation")
            click(browser, "#new-send")
            visible(browser, "#message", "Conversation started.")
            visible(browser, "#conv-title .ch-email")
            visible(browser, "#timeline li.out", "Here is the invoice you asked for.", timeout=20)
            return read(browser, "#assigned li.selected", attribute="data-id")

        email_cid = await in_thread(email_the_current_customer)
        assert email_cid != "cv-maria-sms"
        log = await s.log("cu-maria")
        opened = [
            e.event for e in log if isinstance(e.event, ConversationOpened) and e.event.conversation_id == email_cid
        ]
        assert [(o.channel, o.contact, o.initiated_by) for o in opened] == [("email", "maria@example.com", "agent:ava")]
        assigned = [
            e.event for e in log if isinstance(e.event, ConversationAssigned) and e.event.conversation_id == email_cid
        ]
        assert [a.agent_id for a in assigned] == ["ava"]
        assert [r.text for r in replies(log) if r.conversation_id == email_cid] == [
            "Here is the invoice you asked for."
        ]


async def test_an_agent_attaches_files_to_a_reply_and_sees_the_channels_limits(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    receipt, archive = tmp_path / "receipt.png", tmp_path / "statements.zip"
    receipt.write_bytes(PNG)
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        await open_message(
            s.store, "cu-tom", "cv-tom", channel="sms", contact="+15551230142", sender="Tom",
            text="Can you send me a photo of the receipt?",
        )  # fmt: skip
        await accepted_by_ava(s, token, "cv-tom")

        def reply_with_a_photo() -> None:
            sign_in(browser, s.api, token)
            click(browser, '#assigned li[data-id="cv-tom"]')
            visible(browser, "#timeline li.in", "photo of the receipt", timeout=20)
            visible(browser, "#reply-file").send_keys(str(receipt))
            visible(browser, "#reply-files li", "receipt.png")
            visible(browser, "#reply-text").send_keys("Here it is.")
            click(browser, "#send")
            visible(browser, "#message", "Reply sent with 1 file(s).")
            gone(browser, "#reply-files li")

        await in_thread(reply_with_a_photo)
        sent = await eventually(lambda: _replies_of(s, "cu-tom"))
        assert [(r.text, [(a.name, a.content_type, a.size) for a in r.attachments]) for r in sent] == [
            ("Here it is.", [("receipt.png", "image/png", len(PNG))])
        ]

        def a_file_sms_does_not_take() -> None:
            visible(browser, "#reply-file").send_keys(str(archive))
            visible(browser, "#reply-files li", "statements.zip")
            click(browser, "#send")
            # The channel's limit, as the API words it; the file stays listed to remove.
            visible(browser, "#message.error", "sms does not take")
            click(browser, "#reply-files button.remove")
            gone(browser, "#reply-files li")

        await in_thread(a_file_sms_does_not_take)
        assert len(replies(await s.log("cu-tom"))) == 1  # nothing more went out


async def _replies_of(s: AgentSystem, customer: str) -> list[ReplyRequested] | None:
    return replies(await s.log(customer)) or None


async def test_whatsapp_outside_the_window_offers_templates_only_and_inside_both(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    config.templates = (ORDER_UPDATE,)
    now = datetime.now(UTC)
    async with agent_system(config, clean_nats) as s:
        token, _ = await s.issue_token("ava")
        # WhatsApp through Twilio: the sms channel, the contact says whatsapp.
        await open_message(
            s.store, "cu-old", "cv-wa-old", channel="sms", contact="whatsapp:+15551230301", sender="Olga",
            text="Where is my order?", at=now - timedelta(hours=30), platform="whatsapp",
        )  # fmt: skip
        await accepted_by_ava(s, token, "cv-wa-old")
        await open_message(
            s.store, "cu-new", "cv-wa-new", channel="sms", contact="whatsapp:+15551230302", sender="Nils",
            text="Is my parcel on its way?", at=now - timedelta(hours=1), platform="whatsapp",
        )  # fmt: skip
        await accepted_by_ava(s, token, "cv-wa-new")

        def outside_the_window_only_a_template() -> None:
            from selenium.webdriver.support.ui import Select

            sign_in(browser, s.api, token)
            click(browser, '#assigned li[data-id="cv-wa-old"]')
            visible(browser, "#window-note", "Outside WhatsApp's 24-hour window", timeout=20)
            visible(browser, "#conv-title .ch-whatsapp")  # on Twilio's sms channel, but WhatsApp
            assert "last wrote 30 h ago" in visible(browser, "#window-note").text
            visible(browser, "#send", "Send template")
            assert not displayed(browser, "#reply-attach")
            click(browser, "#send")  # nothing picked: said why, nothing sent
            visible(browser, "#message.error", "pick a template")
            Select(visible(browser, "#reply-template")).select_by_value("order_update")
            visible(browser, '#reply-params input[data-param="customer"]').send_keys("Olga")
            visible(browser, '#reply-params input[data-param="order"]').send_keys("A-77")
            visible(browser, "#template-preview", "Hi Olga, your order A-77 has shipped.")
            screenshot(browser, tmp_path, "workspace-whatsapp-template")
            click(browser, "#send")
            visible(browser, "#message", "Template sent.")

        await in_thread(outside_the_window_only_a_template)
        sent = await eventually(lambda: _replies_of(s, "cu-old"))
        assert sent is not None and len(sent) == 1
        assert sent[0].template is not None and sent[0].template.name == "order_update"
        assert values_of(sent[0].template_values) == ["Olga", "A-77"]
        assert sent[0].text == "Hi Olga, your order A-77 has shipped."

        def inside_the_window_text_or_template() -> None:
            click(browser, '#assigned li[data-id="cv-wa-new"]')
            visible(browser, "#window-note", "the customer wrote 1 h ago", timeout=20)
            visible(browser, "#send", "Send to customer")
            visible(browser, "#reply-template")  # a template is offered too
            visible(browser, "#reply-attach")
            visible(browser, "#reply-text").send_keys("Yes, it left this morning.")
            click(browser, "#send")
            visible(browser, "#message", "Reply sent.")

        await in_thread(inside_the_window_text_or_template)
        sent = await eventually(lambda: _replies_of(s, "cu-new"))
        assert sent is not None
        assert [(r.text, r.template) for r in sent] == [("Yes, it left this morning.", None)]
