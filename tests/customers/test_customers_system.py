"""Issue 5, customers, over a real nats-server with intake, router, projector and API in-process:
one customer across SMS and WhatsApp, merges (timelines, next messages, refusals), links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events import subjects
from events.model import ConversationOpened, CustomersMerged, IdentityLinked, MessageReceived
from services.bus.embedded import EmbeddedNats
from services.identity import IdentityDirectory
from tests.customers.helpers import Desk, running_desk
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def test_sms_then_whatsapp_from_the_same_number_is_one_customer_with_one_timeline(desk: Desk) -> None:
    await desk.write("sms", "+15551234567", "Hello by SMS")
    sms_customer = await desk.customer_of("sms:+15551234567")
    await desk.timeline_texts(sms_customer, "Hello by SMS")
    # WhatsApp Cloud API senders are wa_ids: digits with the country code, no plus.
    await desk.write("social", "15551234567", "Hello by WhatsApp", metadata={"platform": "whatsapp"})
    assert await desk.customer_of("whatsapp:+1 555 123 4567") == sms_customer
    entries = await desk.timeline_texts(sms_customer, "Hello by SMS", "Hello by WhatsApp")
    channels = {e["channel"] for e in entries if e["kind"] == "message_in"}
    assert channels == {"sms", "social"}
    created = [e for e in entries if e["kind"] == "customer_created"]
    assert len(created) == 1
    status, body = await desk.system.get(f"/v1/customers/{sms_customer}")
    assert status == 200, body
    assert body["identities"] == ["phone:+15551234567"]


async def merged_pair(desk: Desk) -> tuple[str, str]:
    """Ann writes by SMS; 'another' customer writes by email: the same person."""
    await desk.write("sms", "+15550001111", "SMS from Ann: my invoice is wrong")
    await desk.write("email", "Ann.Other@Example.COM", "Email from Ann: about that invoice")
    ann = await desk.customer_of("sms:+15550001111")
    other = await desk.customer_of("email:Ann.Other@example.com")
    assert ann != other
    await desk.timeline_texts(ann, "SMS from Ann: my invoice is wrong")
    await desk.timeline_texts(other, "Email from Ann: about that invoice")
    return ann, other


async def test_merging_two_customers_shows_both_histories_and_the_next_messages_land_on_the_survivor(
    desk: Desk,
) -> None:
    ann, other = await merged_pair(desk)
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": other})
    assert status == 200, body
    assert body["identities_moved"] == ["email:Ann.Other@example.com"]

    # The real event, on the survivor's _customer subject; nothing else was written for it.
    on_ann = [s.event for s in await desk.store.read(subjects.customer_scope(ann))]
    merges = [e for e in on_ann if isinstance(e, CustomersMerged)]
    assert [(m.customer_id, m.merged_id, m.actor) for m in merges] == [(ann, other, "operator")]

    # Both histories on the survivor's timeline, with the merge itself.
    entries = await desk.timeline_texts(ann, "SMS from Ann: my invoice is wrong", "Email from Ann: about that invoice")
    merge_entries = [e["detail"] for e in entries if e["kind"] == "customers_merged"]
    assert merge_entries == [{"actor": "operator", "merged_id": other}]

    async def merged_read() -> dict[str, Any] | None:
        status, body = await desk.system.get(f"/v1/customers/{other}")
        return body if status == 200 and body["merged_into"] == ann else None

    assert (await eventually(merged_read))["merged_into"] == ann
    status, body = await desk.system.get(f"/v1/customers/{ann}")
    assert status == 200, body
    assert body["identities"] == ["email:Ann.Other@example.com", "phone:+15550001111"]
    assert body["merged"] == [other] and body["merged_into"] is None

    # The merged customer's address now finds the survivor.
    assert await desk.customer_of("email:Ann.Other@EXAMPLE.com") == ann

    # So does a search: the merged-away customer is not an answer of its own (found by an audit).
    async def searched() -> list[str] | None:
        status, body = await desk.system.get("/v1/customers", q="Ann.Other")
        ids = [c["customer_id"] for c in body["customers"]] if status == 200 else []
        return ids if ids == [ann] else None

    assert await eventually(searched) == [ann]
    status, body = await desk.system.get("/v1/customers", tier="diamond")
    assert (status, body["error"]) == (400, "unknown tier 'diamond'"), body
    # A new mail (no thread reference: a new conversation) lands on the survivor's subjects.
    await desk.write("email", "Ann.Other@example.com", "Email from Ann after the merge")
    entries = await desk.timeline_texts(ann, "Email from Ann after the merge")
    [after] = [e for e in entries if e.get("text") == "Email from Ann after the merge"]
    assert after["customer_id"] == ann
    opened = [s.event for s in await desk.store.read_customer(ann) if isinstance(s.event, ConversationOpened)]
    assert after["conversation_id"] in {o.conversation_id for o in opened}


async def test_after_a_merge_an_open_conversation_of_the_merged_customer_continues(desk: Desk) -> None:
    await desk.write("sms", "+15550002222", "first number, first message")
    await desk.write("sms", "+15550003333", "second number, first message")
    ann = await desk.customer_of("sms:+15550002222")
    other = await desk.customer_of("sms:+15550003333")
    await desk.timeline_texts(other, "second number, first message")
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": other})
    assert status == 200, body
    await desk.write("sms", "+15550003333", "second number, second message")
    await desk.timeline_texts(ann, "second number, second message")
    # Same conversation as before the merge, still on the merged customer's own subject.
    received = {
        e.text: e.conversation_id
        for s in await desk.store.read_customer(other)
        if isinstance(e := s.event, MessageReceived)
    }
    assert received["second number, second message"] == received["second number, first message"]
    opened = [s.event for s in await desk.store.read_customer(ann) if isinstance(s.event, ConversationOpened)]
    assert len(opened) == 1  # nothing new opened on the survivor


async def test_merge_refusals(desk: Desk) -> None:
    ann, other = await merged_pair(desk)
    await desk.write("chat", "visitor-3", "a third customer")
    third = await desk.customer_of("chat:visitor-3")
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": ann})
    assert (status, body["error"]) == (400, "a customer cannot be merged into itself")
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": "cu_nobody"})
    assert status == 404, body
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": "not a token!"})
    assert status == 400, body
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {})
    assert status == 400, body
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": other})
    assert status == 200, body
    # Merging it again: into the same customer it is done already (a retry); into another, refused.
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": other})
    assert (status, body["already_merged"]) == (200, True), body
    status, body = await desk.system.post(f"/v1/customers/{third}/merge", {"other": other})
    assert status == 409, body
    assert body["merged_into"] == ann
    # Merging into a merged-away customer, or updating one.
    status, body = await desk.system.post(f"/v1/customers/{other}/merge", {"other": third})
    assert (status, body["merged_into"]) == (409, ann)
    status, body = await desk.put(f"/v1/customers/{other}", {"tier": "gold"})
    assert (status, body["merged_into"]) == (409, ann)
    # A cycle: the survivor into the customer merged into it.
    status, body = await desk.system.post(f"/v1/customers/{other}/merge", {"other": ann})
    assert status == 409, body
    merges = [s for s in await desk.store.read(subjects.EVENTS_ALL) if isinstance(s.event, CustomersMerged)]
    assert len(merges) == 1


async def test_linking_an_address(desk: Desk) -> None:
    ann, other = await merged_pair(desk)
    # A fresh address: linked (create-only), recorded, and found.
    status, body = await desk.system.post(f"/v1/customers/{ann}/identities", {"identity": "chat:ann-visitor"})
    assert (status, body["linked"], body["identity"]) == (200, True, "chat:ann-visitor"), body
    assert await desk.customer_of("chat:ann-visitor") == ann
    status, body = await desk.system.post(f"/v1/customers/{ann}/identities", {"identity": "chat:ann-visitor"})
    assert (status, body["linked"]) == (200, False), body  # again: nothing new
    on_ann = [s.event for s in await desk.store.read(subjects.customer_scope(ann))]
    linked = [e for e in on_ann if isinstance(e, IdentityLinked)]
    assert [e.identity for e in linked] == ["chat:ann-visitor"]
    status, body = await desk.system.get(f"/v1/customers/{ann}")
    assert "chat:ann-visitor" in body["identities"]
    status, body = await desk.system.get("/v1/customers", q="chat:ann-visitor")  # a linked address
    assert [c["customer_id"] for c in body["customers"]] == [ann]
    # A bad address.
    status, body = await desk.system.post(f"/v1/customers/{ann}/identities", {"identity": "sms:12"})
    assert status == 400, body
    # A kind no channel makes (a typo): refused, naming the near miss, nothing linked.
    status, body = await desk.system.post(f"/v1/customers/{ann}/identities", {"identity": "emial:ann@example.org"})
    assert status == 400, body
    assert "unknown identity kind 'emial' (did you mean 'email'?)" in body["error"], body
    status, body = await desk.system.get(f"/v1/customers/{ann}")
    assert not [i for i in body["identities"] if i.startswith("emial:")], body
    # Another customer's address: refused, naming the owner; with merge: true, merged.
    status, body = await desk.system.post(
        f"/v1/customers/{ann}/identities", {"identity": "email:Ann.Other@example.com"}
    )
    assert (status, body["customer_id"]) == (409, other), body
    status, body = await desk.system.post(
        f"/v1/customers/{ann}/identities", {"identity": "email:Ann.Other@example.com", "merge": True}
    )
    assert (status, body["merged"]) == (200, other), body
    assert await desk.customer_of("email:Ann.Other@example.com") == ann
    await desk.timeline_texts(ann, "SMS from Ann: my invoice is wrong", "Email from Ann: about that invoice")


async def test_search_and_profile(desk: Desk) -> None:
    await desk.write("sms", "+15550004444", "hi")
    cid = await desk.customer_of("sms:+15550004444")
    status, body = await desk.put(f"/v1/customers/{cid}", {"tier": "gold", "crm_id": "CRM-4444"})
    assert status == 200, body
    status, body = await desk.put(f"/v1/customers/{cid}", {"tier": "diamond"})
    assert status == 400, body

    async def found() -> list[dict[str, Any]] | None:
        status, body = await desk.system.get("/v1/customers", q="crm-4444")
        return body["customers"] if status == 200 and body["customers"] else None

    [hit] = await eventually(found)
    assert (hit["customer_id"], hit["tier"]) == (cid, "gold")
    status, body = await desk.system.get("/v1/customers", q="5550004444")
    assert [c["customer_id"] for c in body["customers"]] == [cid]
    status, body = await desk.system.get(f"/v1/customers/{cid}")
    assert (body["tier"], body["crm_id"], body["identities"]) == ("gold", "CRM-4444", ["phone:+15550004444"])
    status, body = await desk.system.get("/v1/customers/cu_nobody")
    assert status == 404
    status, body = await desk.system.get("/v1/customers")
    assert status == 400


async def test_timeline_of_an_unknown_customer_or_channel_is_refused(desk: Desk) -> None:
    ann, other = await merged_pair(desk)
    status, body = await desk.system.get("/v1/customers/cu_doesnotexist/timeline")
    assert (status, body) == (404, {"error": "no customer cu_doesnotexist"})
    status, body = await desk.system.get("/v1/customers/not a token!/timeline")
    assert (status, body["error"]) == (400, "not a customer id"), body
    status, body = await desk.system.get(f"/v1/customers/{ann}/timeline", channel="Fax!")
    assert status == 400, body
    assert body["error"] == (
        "not a channel name: 'Fax!' (built-in: sms, email, chat, social; connectors may add their own)"
    )
    assert body["channels"] == ["sms", "email", "chat", "social"]
    # A channel nobody wrote on (a connector's own, say) is a valid filter with nothing in it.
    status, body = await desk.system.get(f"/v1/customers/{ann}/timeline", channel="telegram")
    assert (status, body["entries"]) == (200, []), body
    # A known channel (and an empty one, meaning every channel) still filters as before.
    status, body = await desk.system.get(f"/v1/customers/{ann}/timeline", channel="sms")
    assert status == 200, body
    assert {e["channel"] for e in body["entries"]} == {"sms"}
    assert "SMS from Ann: my invoice is wrong" in [e.get("text") for e in body["entries"]]
    status, body = await desk.system.get(f"/v1/customers/{ann}/timeline", channel="")
    assert status == 200 and len({e["channel"] for e in body["entries"]}) > 1, body
    # Cursors and limits out of range are the caller's mistake (a huge one was a 500).
    for params, error in (
        ({"after": "99999999999999999999999"}, "after goes from 0 to 9223372036854775807"),
        ({"after": "-1"}, "after goes from 0 to 9223372036854775807"),
        ({"after": "ten"}, "after must be an integer"),
        ({"limit": "0"}, "limit goes from 1 to 1000"),
    ):
        status, body = await desk.system.get(f"/v1/customers/{ann}/timeline", **params)
        assert (status, body["error"]) == (400, error), body

    # A customer merged into another keeps its own timeline (its part of the survivor's).
    status, body = await desk.system.post(f"/v1/customers/{ann}/merge", {"other": other})
    assert status == 200, body
    status, body = await desk.system.get(f"/v1/customers/{other}/timeline")
    assert status == 200, body
    texts = [e.get("text") for e in body["entries"] if e["kind"] == "message_in"]
    assert texts == ["Email from Ann: about that invoice"]
    assert {e["customer_id"] for e in body["entries"]} == {other}
    status, body = await desk.system.get(f"/v1/customers/{other}/timeline", channel="Fax!")
    assert status == 400, body


async def test_an_address_is_found_only_once_its_customer_is_on_the_log(desk: Desk) -> None:
    # Intake names a new customer in the identity directory, then appends its first events: in
    # between, a lookup by address must not hand out an id every other endpoint answers 404 for.
    directory = IdentityDirectory(await desk.nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    named, created = await directory.resolve("phone:+15550001111")
    assert created
    status, _ = await desk.system.get("/v1/customers", identity="sms:+15550001111")
    assert status == 404
    await desk.write("sms", "+15550001111", "hello")  # intake records the customer it finds named
    found = await desk.customer_of("sms:+15550001111")
    assert found == named
    status, body = await desk.system.post(f"/v1/customers/{found}/identities", {"identity": "chat:named-visitor"})
    assert status == 200, body
