"""The console's workspace over a real nats-server: internal notes (on the timeline, never sent
to the customer), the work list's customer name / masked address / preview / email subject,
the customer panel, canned replies with placeholders and signed attachment links."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from aiohttp import web

from events import subjects
from events.model import (
    Attachment,
    ConversationOpened,
    CustomerProfileUpdated,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.store import Append
from events.streams import ATTACHMENTS_BUCKET
from router.state import RouterState
from services.api.attachments import Links, MediaUnavailable, fetch_provider_media
from services.api.console_settings import CannedReply, ConsoleSettings
from services.api.tokens import signing_key
from services.api.workspace import WorkspaceFacts
from services.bootstrap import api_signing_key
from services.bus.embedded import EmbeddedNats
from services.config import ConfigError, load
from tests.fake_http import serving

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, stored_attachment

pytestmark = pytest.mark.integration

CANNED = (
    CannedReply(id="hello", title="Greeting", text="Hi {customer.name}, {agent.name} here ({conversation.id})."),
    CannedReply(id="braces", title="Literal", text="Use {{code}} as given."),
)
LONG = "My invoice for November is wrong: I was charged twice for the same plan and I need a refund please"


@pytest.fixture
async def w(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    config.console = ConsoleSettings(canned_replies=CANNED, crm_url_template="https://crm.example.com/c/{crm_id}")
    async with agent_system(config, clean_nats) as system:
        yield system


async def open_with(
    s: AgentSystem,
    *,
    channel: str = "sms",
    contact: str = "+15551230142",
    text: str = "hello",
    metadata: dict[str, str] | None = None,
    attachments: tuple[Attachment, ...] = (),
    customer: str | None = None,
) -> tuple[str, str, int]:
    """A conversation as intake writes it (billing, English: offered to ava); returns
    (customer, conversation, the message's sequence)."""
    customer = customer or "cu" + uuid.uuid4().hex[:10]
    cid = "cv" + uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    seq = await s.store.append(
        Append(
            ConversationOpened(at=now, customer_id=customer, conversation_id=cid, channel=channel, contact=contact),
            expected=0,
        )
    )
    message_seq = await s.store.append(
        Append(
            MessageReceived(
                at=now,
                customer_id=customer,
                conversation_id=cid,
                channel=channel,
                message_id="msg" + uuid.uuid4().hex[:10],
                provider_message_id="p" + cid,
                text=text,
                language="en",
                attachments=attachments,
                metadata=metadata or {},
            ),
            expected=seq,
        )
    )
    await s.store.append(
        Append(
            RoutingRequested(
                at=now,
                customer_id=customer,
                conversation_id=cid,
                channel=channel,
                requirements=Requirements(skills={"billing": 1}, language="en"),
            ),
            expected=message_seq,
        )
    )
    return customer, cid, message_seq


async def name_customer(s: AgentSystem, customer: str, name: str, crm_id: str | None = None) -> None:
    await s.store.append(
        Append(CustomerProfileUpdated(at=datetime.now(UTC), customer_id=customer, name=name, crm_id=crm_id))
    )


async def accepted_by_ava(s: AgentSystem, cid: str, token: str) -> None:
    """Held by ava: accepted if offered (email is assigned without an offer)."""

    async def reached() -> dict[str, Any] | None:
        conv = await s.conversation(cid)
        return conv if conv and conv["status"] in ("offered", "assigned") and conv["agent_id"] == "ava" else None

    if (await eventually(reached))["status"] == "offered":
        status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", token)
        assert status == 200, body


async def call_with(s: AgentSystem, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
    async with s.system.http.request(method, s.api + path, json=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


# --- notes -------------------------------------------------------------------------------


async def test_a_note_is_on_the_timeline_and_never_reaches_the_customer(w: AgentSystem) -> None:
    ava, _ = await w.issue_token("ava")
    bruno, _ = await w.issue_token("bruno")
    customer, cid, _ = await open_with(w, text="my card was charged twice")
    await eventually(lambda: w.conversation(cid, "offered"))
    status, body = await w.call("POST", f"/v1/conversations/{cid}/notes", ava, {"text": "checking"})
    assert status == 403 and "accept it first" in body["error"]
    await accepted_by_ava(w, cid, ava)

    nc = await nats.connect(w.system.nats.url)
    outbound: asyncio.Queue[Any] = asyncio.Queue()
    sub = await nc.subscribe("rd.out.>", cb=outbound.put)
    try:
        headers = {"Authorization": f"Bearer {ava}", "Idempotency-Key": "note-1"}
        note = {"text": "Customer is a reseller: refund goes through finance"}
        status, _, raw = await call_with(w, "POST", f"/v1/conversations/{cid}/notes", headers, note)
        assert status == 201, raw
        first = msgspec.json.decode(raw)
        assert first["note_id"].startswith("nt_") and first["seq"] > 0
        # A retry with the same key writes nothing new and answers the same note.
        status, again_headers, raw = await call_with(w, "POST", f"/v1/conversations/{cid}/notes", headers, note)
        assert status == 201 and msgspec.json.decode(raw) == first
        assert again_headers.get("Idempotent-Replayed") == "true"

        status, body = await w.call("POST", f"/v1/conversations/{cid}/notes", bruno, {"text": "not mine"})
        assert status == 403, body
        status, body = await w.call("POST", f"/v1/conversations/{cid}/notes", ava, {"text": "  "})
        assert status == 400, body

        # A reply after the note is the first thing on rd.out: the note never went there.
        status, body = await w.call("POST", f"/v1/conversations/{cid}/reply", ava, {"text": "On it!"})
        assert status == 202, body
        queued = await asyncio.wait_for(outbound.get(), 10)
        assert queued.subject == subjects.outbound("sms")
        assert b"reply_id" in queued.data and first["note_id"].encode() not in queued.data
    finally:
        await sub.unsubscribe()
        await nc.drain()

    async def notes_on_timeline() -> list[dict[str, Any]] | None:
        code, body = await w.call("GET", f"/v1/customers/{customer}/timeline", ava)
        assert code == 200, body
        found = [e for e in body["entries"] if e["kind"] == "note"]
        return found or None

    [entry] = await eventually(notes_on_timeline)
    assert entry["text"] == note["text"]
    assert (entry["agent_id"], entry["message_id"], entry["conversation_id"]) == ("ava", first["note_id"], cid)
    assert entry["direction"] == "none" and entry["detail"]["actor"] == "agent:ava"
    notes = [e for e in await w.log(customer) if type(e.event).__name__ == "NoteAdded"]
    assert len(notes) == 1  # the retry wrote nothing


async def test_an_operator_adds_a_note_to_a_resolved_conversation(w: AgentSystem) -> None:
    _, cid, _ = await open_with(w)
    await eventually(lambda: w.conversation(cid, "offered"))
    status, body = await w.call("POST", f"/v1/conversations/{cid}/resolve")
    assert status == 200, body
    await eventually(lambda: w.conversation(cid, "resolved"))
    status, body = await w.call("POST", f"/v1/conversations/{cid}/notes", body={"text": "closed as duplicate"})
    assert status == 201, body
    status, body = await w.call("POST", "/v1/conversations/cvnothere/notes", body={"text": "x"})
    assert status == 404, body


# --- the work list -----------------------------------------------------------------------


async def test_the_work_list_says_who_the_customer_is_and_what_they_wrote(w: AgentSystem) -> None:
    ava, _ = await w.issue_token("ava")
    named, sms_cid, _ = await open_with(w, contact="+15551230142", text=LONG)
    await name_customer(w, named, "Ann Example")
    _, mail_cid, _ = await open_with(
        w,
        channel="email",
        contact="ann@example.com",
        text="Hello,\nplease see the attached invoice.",
        metadata={"subject": "Invoice 42 is wrong", "sender_name": "Ann From Mail"},
    )

    # One offer at a time: ava takes each as it comes (the email is assigned to her at once).
    await accepted_by_ava(w, sms_cid, ava)
    await accepted_by_ava(w, mail_cid, ava)
    code, work = await w.call("GET", "/v1/agent/work", ava)
    assert code == 200, work
    items = {item["id"]: item for item in work["assigned"]}
    sms = items[sms_cid]
    assert sms["customer"] == {"name": "Ann Example", "address": "+1 •••• 0142", "tier": "standard", "flags": []}
    assert sms["preview"] == LONG[:79] + "…" and len(sms["preview"]) == 80
    assert sms["subject"] is None
    mail = items[mail_cid]
    assert mail["customer"]["name"] == "Ann From Mail"  # no name set: the From display name
    assert mail["customer"]["address"] == "a•••@example.com"
    assert mail["subject"] == "Invoice 42 is wrong"
    assert mail["preview"] == "Hello, please see the attached invoice."

    # The live stream's first frame carries the same items.
    headers = {"Authorization": f"Bearer {ava}"}
    async with w.system.http.get(w.api + "/v1/agent/stream", headers=headers) as stream:
        assert stream.status == 200
        lines: list[str] = []
        while not (lines and lines[-1] == ""):
            lines.append((await asyncio.wait_for(stream.content.readline(), 10)).decode().rstrip("\n"))
    assert "event: work" in lines
    frame = msgspec.json.decode(next(line for line in lines if line.startswith("data: "))[6:])
    streamed = {item["id"]: item for item in frame["assigned"]}
    assert streamed[sms_cid]["customer"]["name"] == "Ann Example"
    assert streamed[mail_cid]["subject"] == "Invoice 42 is wrong"


async def test_a_name_set_before_the_view_started_is_looked_up_once(w: AgentSystem) -> None:
    customer, _, _ = await open_with(w)
    await name_customer(w, customer, "Old Name")
    await name_customer(w, customer, "Bea Newname")
    facts = WorkspaceFacts(w.store)  # a view that starts after both updates (from a snapshot)
    state = RouterState()  # nobody merged
    assert facts.missing_names(state, [customer]) == [customer]
    await facts.look_up([customer])
    assert facts.name_of(state, customer) == "Bea Newname"
    assert facts.missing_names(state, [customer]) == []


# --- the customer panel ------------------------------------------------------------------


async def test_the_customer_panel_has_name_crm_link_and_conversations(w: AgentSystem) -> None:
    customer, first, _ = await open_with(w)
    await name_customer(w, customer, "Ann Example", crm_id="CRM 7/1")
    await eventually(lambda: w.conversation(first, "offered"))
    status, body = await w.call("POST", f"/v1/conversations/{first}/resolve")
    assert status == 200, body

    async def panel() -> dict[str, Any] | None:
        code, body = await w.call("GET", f"/v1/customers/{customer}")
        assert code == 200, body
        return body if body["conversations"] and body["conversations"][0]["status"] == "resolved" else None

    body = await eventually(panel)
    assert body["name"] == "Ann Example"
    assert body["crm_id"] == "CRM 7/1"
    assert body["crm_url"] == "https://crm.example.com/c/CRM%207%2F1"
    [conversation] = body["conversations"]
    assert conversation["id"] == first and conversation["channel"] == "sms"
    assert conversation["opened_at"] and conversation["resolved_at"]


# --- canned replies ----------------------------------------------------------------------


async def test_canned_replies_are_filled_for_the_conversation(w: AgentSystem) -> None:
    ava, _ = await w.issue_token("ava")
    status, body = await w.call("GET", "/v1/canned-replies", ava)
    assert status == 200, body
    assert body["canned_replies"][0] == {"id": "hello", "title": "Greeting", "text": CANNED[0].text, "source": "config"}

    named, cid, _ = await open_with(w)
    await name_customer(w, named, "Ann Example")
    await eventually(lambda: w.conversation(cid, "offered"))
    status, body = await w.call("GET", f"/v1/conversations/{cid}/canned-replies", ava)
    assert status == 200, body  # while offered too: the agent reads them before accepting
    texts = {reply["id"]: reply["text"] for reply in body["canned_replies"]}
    assert texts == {"hello": f"Hi Ann Example, Ava here ({cid}).", "braces": "Use {code} as given."}

    _, anonymous, _ = await open_with(w)
    await eventually(lambda: w.conversation(anonymous, "offered"))
    status, body = await w.call("GET", f"/v1/conversations/{anonymous}/canned-replies")
    assert status == 200, body
    assert body["canned_replies"][0]["text"].startswith("Hi there, Ava here")


# --- attachments -------------------------------------------------------------------------


async def test_an_attachment_opens_through_a_signed_link_for_its_caller_only(w: AgentSystem) -> None:
    data = b"%PDF-1.4 the invoice\n"
    stored = await stored_attachment(w.store, data, name="invoice 42.pdf", content_type="application/pdf")
    missing = Attachment(url=f"nats-object://{ATTACHMENTS_BUCKET}/{'0' * 64}", name="gone.png")
    customer, _, seq = await open_with(w, attachments=(stored, missing))

    async def attachments() -> list[dict[str, Any]] | None:
        code, body = await w.call("GET", f"/v1/customers/{customer}/timeline")
        if code == 404:
            return None  # the projection has not folded it yet
        assert code == 200, body
        entries = [e for e in body["entries"] if e["kind"] == "message_in"]
        return entries[0]["detail"]["attachments"] if entries else None

    shown = await eventually(attachments)
    assert all(a["url"].startswith("/v1/attachments/") for a in shown)
    operator = {"Authorization": f"Bearer {API_TOKEN}"}
    status, headers, body = await call_with(w, "GET", shown[0]["url"], operator)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == "inline; filename*=UTF-8''invoice%2042.pdf"
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, _, body = await call_with(w, "GET", shown[1]["url"], operator)
    assert status == 404 and b"no longer stored" in body

    # Made for the operator: another caller cannot use it, nor an altered or expired link.
    ava, _ = await w.issue_token("ava")
    status, _, body = await call_with(w, "GET", shown[0]["url"], {"Authorization": f"Bearer {ava}"})
    assert status == 403 and b"someone else" in body
    payload, _, signature = shown[0]["url"].rpartition("/")[2].partition(".")
    forged = f"/v1/attachments/{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    status, _, body = await call_with(w, "GET", forged, operator)
    assert status == 403 and b"not valid" in body
    key = signing_key(api_signing_key(w.system.config, w.system.config.data_dir), API_TOKEN)
    message_id = next(e for e in await w.log(customer) if e.seq == seq).event.message_id  # type: ignore[union-attr]
    ten_minutes_ago = Links(key, clock=lambda: datetime.now(UTC).timestamp() - 600)
    stale = ten_minutes_ago.token(customer, seq, message_id, 0, "operator")
    status, _, body = await call_with(w, "GET", f"/v1/attachments/{stale}", operator)
    assert status == 403 and b"expired" in body
    fresh = Links(key).token(customer, seq, message_id, 0, "operator")
    status, _, body = await call_with(w, "GET", f"/v1/attachments/{fresh}", operator)
    assert status == 200 and body == data


# --- provider media (Meta Graph) -------------------------------------------------------------

MEDIA = b"\xff\xd8\xff jpeg bytes"


@contextlib.asynccontextmanager
async def fake_graph() -> AsyncIterator[str]:
    """Meta's documented media flow: ``GET /<version>/<media id>`` with the bearer token answers
    ``{"url", "mime_type", "sha256", "file_size", "id", "messaging_product"}``; the ``url``
    answers the bytes to the same token. Any other token: 401 with a Graph error."""

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == "Bearer page-token"

    async def info(request: web.Request) -> web.Response:
        if not authorised(request):
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}
            return web.json_response({"error": error}, status=401)
        media_id = request.match_info["media_id"]
        if media_id != "MEDIA1":
            return web.json_response({"error": {"message": "Unsupported get request.", "code": 100}}, status=404)
        url = f"http://{request.host}/whatsapp_business/attachments/?mid={media_id}"
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": url,
                "mime_type": "image/jpeg",
                "file_size": len(MEDIA),
                "id": media_id,
            }
        )

    async def download(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.Response(status=401)
        return web.Response(body=MEDIA, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/v21.0/{media_id}", info)
    app.router.add_get("/whatsapp_business/attachments/", download)
    async with serving(app) as url:
        yield url


async def test_whatsapp_media_is_fetched_with_the_phone_numbers_token() -> None:
    async with fake_graph() as graph, aiohttp.ClientSession() as http:
        social = {"graph_base_url": graph, "access_token": "app-token", "page_tokens": {"PN1": "page-token"}}
        data, content_type = await fetch_provider_media(
            http, f"{graph}/v21.0/MEDIA1", {"phone_number_id": "PN1"}, social
        )
        assert (data, content_type) == (MEDIA, "image/jpeg")

        with pytest.raises(MediaUnavailable, match="refused the credentials") as refused:
            await fetch_provider_media(http, f"{graph}/v21.0/MEDIA1", {"phone_number_id": "PN2"}, social)
        assert refused.value.status == 502
        with pytest.raises(MediaUnavailable, match="no Meta access token"):
            await fetch_provider_media(http, f"{graph}/v21.0/MEDIA1", {}, {"graph_base_url": graph})
        with pytest.raises(MediaUnavailable, match="no longer has this media") as gone:
            await fetch_provider_media(http, f"{graph}/v21.0/OTHER", {"phone_number_id": "PN1"}, social)
        assert gone.value.status == 404
        with pytest.raises(MediaUnavailable, match=r"no credentials to fetch media from cdn\.example\.com"):
            await fetch_provider_media(http, "https://cdn.example.com/ME1", {}, social)


@contextlib.asynccontextmanager
async def fake_twilio_media() -> AsyncIterator[str]:
    """Twilio's media URL as documented: with basic auth on, the account sid and auth token are
    asked for, and the answer is a 302 to a short-lived signed URL on another host."""

    async def media(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"AC1:tw-token").decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        # 127.0.0.1 vs localhost: another origin, so the credentials must not follow the redirect.
        raise web.HTTPFound(f"http://localhost:{request.url.port}/signed/ME1?Expires=60")

    async def signed(request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="credentials leaked to the CDN")
        return web.Response(body=MEDIA, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", media)
    app.router.add_get("/signed/ME1", signed)
    async with serving(app) as url:
        yield url


async def test_twilio_mms_media_is_fetched_with_the_accounts_credentials() -> None:
    async with fake_twilio_media() as api, aiohttp.ClientSession() as http:
        url = f"{api}/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
        sms = {"api_base_url": api, "account_sid": "AC1", "auth_token": "tw-token"}
        assert await fetch_provider_media(http, url, {}, {}, sms) == (MEDIA, "image/jpeg")
        # The sid may also come from the URL when the config names none.
        assert await fetch_provider_media(http, url, {}, {}, {"api_base_url": api, "auth_token": "tw-token"}) == (
            MEDIA,
            "image/jpeg",
        )
        with pytest.raises(MediaUnavailable, match="refused the credentials"):
            await fetch_provider_media(http, url, {}, {}, {**sms, "auth_token": "wrong"})
        with pytest.raises(MediaUnavailable, match="no Twilio credentials configured"):
            await fetch_provider_media(http, url, {}, {}, {"api_base_url": api})


async def test_a_whatsapp_attachment_opens_through_the_api(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with fake_graph() as graph:
        config = agents_config(tmp_path, clean_nats.url)
        config.connectors = {
            **config.connectors,
            "social": {"graph_base_url": graph, "access_token": "page-token", "enabled": False},
        }
        async with agent_system(config, clean_nats) as s:
            photo = Attachment(url=f"{graph}/v21.0/MEDIA1", content_type="image/jpeg", name="image")
            customer, _, _ = await open_with(
                s, attachments=(photo,), metadata={"platform": "whatsapp", "phone_number_id": "PN1"}
            )

            async def link() -> str | None:
                code, body = await s.call("GET", f"/v1/customers/{customer}/timeline")
                entries = [e for e in body.get("entries", []) if e["kind"] == "message_in"] if code == 200 else []
                return entries[0]["detail"]["attachments"][0]["url"] if entries else None

            url = await eventually(link)
            status, headers, body = await call_with(s, "GET", url, {"Authorization": f"Bearer {API_TOKEN}"})
            assert status == 200 and body == MEDIA
            assert headers["Content-Type"] == "image/jpeg"


# --- configuration -------------------------------------------------------------------------


def test_an_unknown_placeholder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "relaydesk.toml"
    path.write_text(
        """
[console]
crm_url_template = "https://crm.example.com/c/{crm_id}"

[[console.canned_replies]]
id = "hello"
title = "Greeting"
text = "Hi {customer.first_name}, this is {agent.name}."
"""
    )
    with pytest.raises(ConfigError) as refused:
        load(path, env={})
    [problem] = refused.value.problems
    assert "[[console.canned_replies]] #1 (hello)" in problem and "{customer.first_name}" in problem
    path.write_text(path.read_text().replace("customer.first_name", "customer.name"))
    config = load(path, env={})
    assert config.console.canned_replies[0].text == "Hi {customer.name}, this is {agent.name}."


def test_the_workspace_fold_keeps_open_conversations_and_says_where_to_refeed_from() -> None:
    from events.model import ConversationResolved
    from events.store import StoredEvent

    facts = WorkspaceFacts(None)
    now = datetime.now(UTC)

    def at(seq: int, event: Any) -> StoredEvent:
        return StoredEvent(seq=seq, subject=subjects.for_event(event), event=event)

    opened = ConversationOpened(
        at=now, customer_id="cu1", conversation_id="cv1", channel="sms", contact="+447700900123"
    )
    later = ConversationOpened(at=now, customer_id="cu2", conversation_id="cv2", channel="chat", contact="visitor-8841")
    facts.apply(at(10, opened))
    facts.apply(at(12, later))
    auto = MessageReceived(
        at=now,
        customer_id="cu1",
        conversation_id="cv1",
        channel="sms",
        message_id="m1",
        provider_message_id="p1",
        text="Out of office",
        metadata={"auto": "true"},
    )
    facts.apply(at(13, auto))
    assert facts.refeed_from() == 10
    assert facts.item_json(RouterState(), "cv1", "cu1")["preview"] is None  # an auto-reply is not the customer
    assert facts.item_json(RouterState(), "cv1", "cu1")["customer"]["address"] == "+44 •••• 0123"
    assert facts.item_json(RouterState(), "cv2", "cu2")["customer"]["address"] == "••••8841"
    facts.apply(at(20, ConversationResolved(at=now, customer_id="cu1", conversation_id="cv1")))
    assert facts.refeed_from() == 12 and "cv1" not in facts.conversations
    facts.apply(at(21, ConversationResolved(at=now, customer_id="cu2", conversation_id="cv2")))
    assert facts.refeed_from() == 22  # nothing open: nothing to read again
