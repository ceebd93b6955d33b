"""Which stored messages and records an erasure takes (``services.customers.erase_match``) and
which ids a kept API answer names (``services.api.idempotency.command_refs``): pure."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from connectors.email.unparsed import RAW_OBJECT_HEADER
from events.parking import ParkedMessage
from services.api.idempotency import Record, command_refs
from services.customers.erase_match import Family, FamilyMatcher

FAMILY = Family(ids=["cu_zelda", "cu_merged"], identities={"phone:+447700900123", "email:zelda@example.org"})
FAMILY.provider_ids.add("sms:SM1")
FAMILY.conversations.add("cv_1")


def sender_identity(channel: str, sender: str, platform: str | None) -> str | None:
    return f"phone:{sender}" if channel == "sms" else f"email:{sender.lower()}"


MATCHER = FamilyMatcher(FAMILY, sender_identity, "rd_attachments")


def inbound(**fields: object) -> bytes:
    return msgspec.json.encode({"type": "inbound_message", "channel": "sms", **fields})


def parked(stream: str, data: bytes, **headers: str) -> bytes:
    record = ParkedMessage(
        stream=stream,
        seq=7,
        subject="rd.inbound.sms",
        kind="dead_letter",
        reader="intake",
        error="bad",
        parked_at=datetime.now(UTC),
        data=data,
        headers=headers,
    )
    return msgspec.json.encode(record)


def test_a_message_of_hers_is_found_even_when_no_reader_could_decode_it() -> None:
    assert MATCHER.inbound(inbound(sender="+447700900123", text="hi"))
    assert MATCHER.inbound(inbound(sender="+447700900123", attachments="not a list", metadata={"n": 1}))
    assert MATCHER.inbound(inbound(sender="+15550000000", provider_message_id="SM1"))
    assert MATCHER.inbound(b"garbage from 447700900123")  # not JSON: her number by its digits
    assert MATCHER.inbound(b'["a list", "ZELDA@example.org"]')  # JSON, not an object: her address, any case


def test_another_customers_message_that_mentions_her_is_not_hers_to_erase() -> None:
    assert MATCHER.inbound(inbound(sender="+15550000000", text="my friend is +447700900123")) is None
    assert MATCHER.inbound(b"garbage from nobody we know") is None


def test_records_are_found_by_customer_subject_payload_or_the_ids_a_kept_answer_names() -> None:
    assert MATCHER.record(msgspec.json.encode({"customer_id": "cu_merged", "body": {}})) == (True, set())
    kept = Record(state="done", fingerprint="f", started_at=0.0, body=b"sealed", refs=["cv_1", "v1"])
    assert MATCHER.record(msgspec.json.encode(kept))[0]
    other = Record(state="done", fingerprint="f", started_at=0.0, body=b"zelda@example.org", refs=["cu_other"])
    assert not MATCHER.record(msgspec.json.encode(other))[0]  # sealed bodies are never searched
    assert MATCHER.record(parked("RD_INBOUND", inbound(sender="+447700900123", attachments="x")))[0]
    assert not MATCHER.record(parked("RD_INBOUND", inbound(sender="+15550000000")))[0]


def test_an_unparseable_mail_naming_her_goes_with_its_raw_bytes() -> None:
    digest = "a" * 64
    mail = parked("email", b"From: zelda@example.org\r\n\r\n", **{RAW_OBJECT_HEADER: f"nats-object://rd_att/{digest}"})
    assert MATCHER.record(mail) == (True, {("rd_att", digest)})
    other = parked("email", b"From: someone@else.org\r\n\r\n", **{RAW_OBJECT_HEADER: f"nats-object://rd_att/{digest}"})
    assert not MATCHER.record(other)[0]


def test_short_ids_and_addresses_are_no_needles() -> None:
    assert Family(ids=["cu_1"], identities={"chat:ab"}).needles() == []


def test_a_kept_answer_names_ids_never_names_or_addresses() -> None:
    answer = msgspec.json.encode(
        {
            "customer_id": "cu_zelda",
            "name": "Zelda Quartermain",
            "merged_ids": ["cu_merged"],
            "identities_moved": ["email:zelda@example.org"],
            "conversations": [{"id": "cv_1", "contact": "+447700900123"}],
        }
    )
    refs = command_refs("/v1/customers/cu_zelda/merge", b'{"other": "cu_merged"}', answer)
    assert refs == ["cu_merged", "cu_zelda", "customers", "cv_1", "merge", "v1"]
    assert command_refs("/v1/uploads", b"\x89PNG", b"not json") == ["uploads", "v1"]
