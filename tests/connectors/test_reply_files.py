"""Files in replies (issue 13): an agent uploads a file, a reply names it, and each channel's
connector sends it the provider's way: Twilio MMS ``MediaUrl`` (a signed public link the
fake provider fetches without credentials), WhatsApp Cloud API media by ``link`` with the
text as caption, email as a MIME attachment, web chat as a link. Every service runs over a
real nats-server; providers are local fakes answering as documented."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.chat.connector import with_file_links
from events.model import Attachment, DeliverReply
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.fake_graph import FakeGraph, fake_graph_server
from tests.integration.fake_twilio import FakeTwilio, fake_twilio_server, with_fake_twilio
from tests.integration.system import API_TOKEN, System, accept_if_offered, eventually, running_system, system_config

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
META_SECRET = "meta-app-secret"
PHONE_NUMBER_ID = "106540352242922"


@pytest.fixture
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    async with fake_twilio_server() as found:
        yield found


async def upload(system: System, data: bytes, content_type: str, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": content_type}
    async with system.http.post(f"{system.api}/v1/uploads?name={name}", data=data, headers=headers) as r:
        body = await r.json()
        assert r.status == 201, body
        return body  # type: ignore[no-any-return]


async def fetch(system: System, url: str) -> tuple[int, bytes, str]:
    async with system.http.get(url) as r:  # no bearer: the signed link is the permission
        return r.status, await r.read(), r.content_type


async def test_an_sms_reply_with_a_picture_goes_as_mms_from_a_signed_link(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    config.connectors["sms"]["max_attachment_bytes"] = 4096  # [connectors.sms]: below Twilio's 5 MB
    async with running_system(config, clean_nats) as system:
        assert await system.send_sms("SM" + "4" * 32, "+15551239001", "can you send the receipt?") == 200
        customer_id = await eventually(lambda: system.customer("+15551239001"))
        conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))

        uploaded = await upload(system, PNG, "image/png", "receipt.png")
        assert (uploaded["size"], uploaded["sha256"]) == (len(PNG), hashlib.sha256(PNG).hexdigest())
        zipped = await upload(system, b"PK\x03\x04zip", "application/zip", "logs.zip")
        status, refused = await system.post(
            f"/v1/conversations/{conv['id']}/reply", {"text": "logs", "attachments": [zipped["id"]]}
        )
        assert status == 400 and "sms does not take application/zip" in refused["error"]
        status, unknown = await system.post(
            f"/v1/conversations/{conv['id']}/reply", {"text": "x", "attachments": ["up_" + "0" * 32]}
        )
        assert status == 400 and "no upload" in unknown["error"]
        big = await upload(system, PNG * 3, "image/png", "big.png")
        status, too_big = await system.post(
            f"/v1/conversations/{conv['id']}/reply", {"text": "x", "attachments": [big["id"]]}
        )
        assert status == 400 and "sms takes at most 4096" in too_big["error"]

        status, body = await system.post(
            f"/v1/conversations/{conv['id']}/reply", {"text": "Here it is", "attachments": [uploaded["id"]]}
        )
        assert status == 202, body
        await eventually(lambda: _at_least(fake.messages, 1))
        media_url = fake.messages[0]["MediaUrl"]
        got = await fetch(system, media_url)
        forged = await fetch(system, media_url[:-3] + ("AAA" if not media_url.endswith("AAA") else "BBB"))
    assert fake.messages[0]["Body"] == "Here it is"
    assert media_url.startswith(system.api + "/v1/files/")
    assert got == (200, PNG, "image/png")
    assert forged[0] == 403


class MailSink:
    def __init__(self) -> None:
        self.mail: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(envelope.content)
        return "250 OK"


async def test_an_email_reply_carries_the_file_as_a_mime_attachment(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    from aiosmtpd.controller import Controller

    sink = MailSink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    config = system_config(tmp_path, clean_nats.url)
    config.connectors["email"] = {
        "port": free_port(),
        "smtp_port": free_port(),
        "domains": ["support.example.com"],
        "send_host": "127.0.0.1",
        "send_port": sink_port,
        "send_starttls": False,
        "from_address": "help@support.example.com",
    }
    pdf = b"%PDF-1.4\n" + b"0" * 5000 + b"\n%%EOF"
    try:
        async with running_system(config, clean_nats) as system:
            form = aiohttp.FormData()
            form.add_field("file", pdf, filename="invoice 42.pdf", content_type="application/pdf")
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with system.http.post(f"{system.api}/v1/uploads", data=form, headers=headers) as r:
                uploaded = await r.json()
                assert r.status == 201, uploaded  # a multipart upload, as a browser form sends it
            start = {
                "address": "email:ann@example.com",
                "subject": "Your invoice",
                "text": "Attached.",
                "attachments": [uploaded["id"]],
                "agent_id": "ava",
            }
            status, body = await system.post("/v1/conversations", start)
            assert status == 201, body
            await eventually(lambda: _at_least(sink.mail, 1))
    finally:
        controller.stop()
    message = email.message_from_bytes(sink.mail[0], policy=email.policy.default)
    assert "Attached." in message.get_body(preferencelist=("plain",)).get_content()
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "invoice 42.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf


@pytest.fixture
async def fake_graph() -> AsyncIterator[tuple[FakeGraph, str]]:
    async with fake_graph_server() as found:
        yield found


async def test_a_whatsapp_reply_sends_the_file_by_link_with_the_text_as_caption(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_graph: tuple[FakeGraph, str]
) -> None:
    graph, graph_url = fake_graph
    social_port = free_port()
    config = system_config(tmp_path, clean_nats.url)
    config.connectors["social"] = {
        "port": social_port,
        "app_secret": META_SECRET,
        "access_token": "EAAG-test",
        "graph_base_url": graph_url,
    }
    async with running_system(config, clean_nats) as system:
        raw = _whatsapp_inbound("15551239002", "wamid.IN9", "photo of the damage please?")
        sig = "sha256=" + hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
        async with system.http.post(f"http://127.0.0.1:{social_port}/meta/webhook", data=raw, headers=headers) as r:
            assert r.status == 200
        customer_id = await eventually(lambda: _customer(system, "whatsapp:+15551239002"))
        conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
        uploaded = await upload(system, PNG, "image/png", "label.png")
        status, body = await system.post(
            f"/v1/conversations/{conv['id']}/reply", {"text": "Your return label", "attachments": [uploaded["id"]]}
        )
        assert status == 202, body
        await eventually(lambda: _at_least(graph.sent, 1))
        link = graph.sent[0][1]["image"]["link"]
        got = await fetch(system, link)
    assert graph.sent[0][1] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551239002",
        "type": "image",
        "image": {"link": link, "caption": "Your return label"},
    }
    assert got[0] == 200 and got[1] == PNG


def test_a_chat_reply_lists_each_file_as_a_link_line() -> None:
    reply = DeliverReply(
        conversation_id="cv1",
        customer_id="cu1",
        channel="chat",
        reply_id="rp1",
        contact="visitor:abc",
        text="Here you go",
        attachments=(Attachment(url="https://api.example.com/v1/files/t.k", name="guide.pdf"),),
    )
    assert with_file_links(reply) == "Here you go\n📎 guide.pdf: https://api.example.com/v1/files/t.k"


def _whatsapp_inbound(wa_id: str, wamid: str, text: str) -> bytes:
    message = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": wa_id}],
        "messages": [message],
    }
    entry = {"id": "WABA_ID", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


async def _customer(system: System, identity: str) -> str | None:
    status, body = await system.get("/v1/customers", identity=identity)
    return body["customers"][0]["customer_id"] if status == 200 and body["customers"] else None


async def _at_least(items: list[Any], n: int) -> bool:
    await asyncio.sleep(0)
    return len(items) >= n
