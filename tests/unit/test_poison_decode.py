"""The decode path of the log: a payload that is no event becomes an ``Undecodable`` marker,
never an exception, and every fold skips it while counting its sequence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from events.codec import Undecodable, decode_log_event, encode
from events.model import ConversationOpened, MessageReceived, UnknownEvent
from events.quarantine import QUARANTINED, Quarantine
from events.store import StoredEvent, to_stored
from router.fold import evolve as route_fold
from router.state import RouterState
from services.customers.facts import fold_facts
from services.intake.customer_history import fold_history
from services.reports.fold import ReportState
from services.reports.fold import evolve as report_fold
from services.timelines.fold_event import NOTHING, fold

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SUBJECT = "rd.evt.c.cu1.cv1"
CUSTOMER_SUBJECT = "rd.evt.c.cu1._customer"

GARBAGE = b"\x00\xffnot json at all{"
BAD_FIELDS = b'{"type":"message_received","at":"2026-11-23T12:00:00Z","customer_id":42}'
POISON = {
    "garbage": GARBAGE,
    "bad fields": BAD_FIELDS,
    "no tag": b'{"at":"2026-11-23T12:00:00Z"}',
    "not an object": b"[1,2,3]",
    "tag not a string": b'{"type":7}',
    "empty": b"",
    # A writer's datetime.now(): compared with an aware time it crashed delivery and decide.
    "time without offset": b'{"type":"conversation_opened","at":"2026-11-23T12:00:00","customer_id":"cu1",'
    b'"conversation_id":"cv1","channel":"sms","contact":"x"}',
    # Arithmetic on it overflowed the reports.
    "time out of range": b'{"type":"conversation_opened","at":"9999-12-31T23:59:59Z","customer_id":"cu1",'
    b'"conversation_id":"cv1","channel":"sms","contact":"x"}',
    # Valid, but its ids name another conversation than the subject it stands on.
    "on another subject": b'{"type":"conversation_opened","at":"2026-11-23T12:00:00Z","customer_id":"cu1",'
    b'"conversation_id":"cv2","channel":"sms","contact":"x"}',
}


@pytest.mark.parametrize("data", list(POISON.values()), ids=list(POISON))
def test_a_payload_that_is_no_event_decodes_to_a_marker(data: bytes) -> None:
    event = decode_log_event(data, subject=SUBJECT)
    assert isinstance(event, Undecodable)
    assert isinstance(event, UnknownEvent)  # so every fold skips it as it skips a newer fact
    assert event.raw == data
    assert event.error
    assert event.customer_id == "cu1"


def test_the_marker_keeps_a_known_tag_and_says_what_is_wrong() -> None:
    event = decode_log_event(BAD_FIELDS, subject=CUSTOMER_SUBJECT)
    assert isinstance(event, Undecodable)
    assert event.type == "message_received"
    assert "customer_id" in event.error
    assert event.customer_id == "cu1"
    garbage = decode_log_event(GARBAGE, subject="rd.evt.a.ava")
    assert isinstance(garbage, Undecodable)
    assert garbage.type == "" and garbage.customer_id is None


def test_a_newer_writers_fact_is_unknown_not_undecodable() -> None:
    event = decode_log_event(b'{"type":"sentiment_scored","at":"2026-11-23T12:00:00Z","score":0.4}')
    assert type(event) is UnknownEvent
    assert event.type == "sentiment_scored"


def test_an_unknown_type_is_said_once_and_counted_not_skipped_unseen() -> None:
    # A poison audit: a typo'd type ("conversation_resolve") left no log line and no count.
    tag = f"conversation_resolve_{uuid.uuid4().hex[:8]}"

    def counted() -> float:
        return REGISTRY.get_sample_value("relaydesk_unknown_events_total", {"type": tag}) or 0.0

    typo = f'{{"type":"{tag}","at":"2026-11-23T12:00:00Z","customer_id":"cu1"}}'.encode()
    with capture_logs() as logs:
        for _ in range(3):
            assert type(decode_log_event(typo, subject=SUBJECT)) is UnknownEvent
    said = [e for e in logs if e["event"] == "log.unknown_event_type"]
    assert [e["type"] for e in said] == [tag] and counted() == 3  # said once, counted each time


def test_a_good_event_still_decodes() -> None:
    opened = ConversationOpened(at=NOW, customer_id="cu1", conversation_id="cv1", channel="sms", contact="+1555")
    assert decode_log_event(encode(opened)) == opened


def fake_msg(seq: int, subject: str, data: bytes) -> Any:
    return SimpleNamespace(
        subject=subject, data=data, headers=None, metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq))
    )


def test_to_stored_never_raises_on_the_payload() -> None:
    stored = to_stored(fake_msg(7, SUBJECT, GARBAGE))
    assert stored.seq == 7 and stored.subject == SUBJECT
    assert isinstance(stored.event, Undecodable)


def poison(seq: int, subject: str = SUBJECT, data: bytes = GARBAGE) -> StoredEvent:
    return StoredEvent(seq=seq, subject=subject, event=decode_log_event(data, subject=subject))


def test_the_router_fold_skips_it_and_counts_its_sequence() -> None:
    state = RouterState()
    route_fold(state, 5, SUBJECT, poison(5).event)
    assert state.last_seq == 5
    assert state.conversations == {}


def test_the_report_fold_skips_it_and_counts_its_sequence() -> None:
    state = report_fold(ReportState(), poison(9, data=BAD_FIELDS))
    assert state.last_seq == 9
    assert state.conversations == {}


def test_the_timeline_fold_writes_nothing_for_it() -> None:
    assert fold(poison(3)) == NOTHING


def test_a_customers_history_counts_it_for_the_expected_sequence() -> None:
    # Intake appends with the customer's last sequence as the expected one: a poison message
    # that is the last on the customer's subjects must count, or the customer is blocked.
    received = MessageReceived(
        at=NOW,
        customer_id="cu1",
        conversation_id="cv1",
        channel="sms",
        message_id="m1",
        provider_message_id="SM1",
        text="hi",
    )
    history = fold_history([StoredEvent(seq=1, subject=SUBJECT, event=received), poison(4, CUSTOMER_SUBJECT)], "cu1")
    assert history.seqs["cu1"] == 4
    assert history.last_seq == 4
    assert ("sms", "SM1") in history.seen
    facts = fold_facts("cu1", [poison(6, CUSTOMER_SUBJECT, BAD_FIELDS)])
    assert facts.last_seq == 6 and not facts.created


def counted(reader: str) -> float:
    return QUARANTINED.labels(reader=reader, stream="RD_EVENTS")._value.get()


def test_a_quarantined_message_is_logged_and_counted_once_per_reader() -> None:
    quarantine = Quarantine(js=None)  # type: ignore[arg-type]  # report() touches no NATS
    before = counted("unit-a")
    with capture_logs() as logs:
        assert quarantine.report("unit-a", "RD_EVENTS", 11, SUBJECT, "cannot decode: malformed JSON")
        assert not quarantine.report("unit-a", "RD_EVENTS", 11, SUBJECT, "cannot decode: malformed JSON")
        assert quarantine.report("unit-b", "RD_EVENTS", 11, SUBJECT, "cannot decode: malformed JSON")
    assert counted("unit-a") == before + 1
    said = [entry for entry in logs if entry["event"] == "log.quarantined"]
    assert [entry["reader"] for entry in said] == ["unit-a", "unit-b"]
    assert said[0]["seq"] == 11 and said[0]["subject"] == SUBJECT and said[0]["stream"] == "RD_EVENTS"
    assert said[0]["customer_id"] == "cu1" and said[0]["conversation_id"] == "cv1"
    assert "malformed JSON" in said[0]["error"]
