"""An event's digest (``events.digests``) recognises the same fact written again, reads the same
sealed, opened or erased, and holds nothing of the customer's personal data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from events.digests import DIGEST, fingerprint, holds
from events.model import MessageReceived
from events.personal import ERASED

AT = datetime(2026, 12, 7, 9, tzinfo=UTC)


def _message(text: str, *, message_id: str = "m1", at: datetime = AT) -> MessageReceived:
    return MessageReceived(
        at=at,
        customer_id="cu1",
        conversation_id="cv1",
        channel="sms",
        message_id=message_id,
        provider_message_id="SM1",
        text=text,
        contact="+15550001111",
    )


def test_the_same_fact_has_the_same_digest_and_another_fact_another() -> None:
    assert fingerprint(_message("hi")) == fingerprint(_message("hi"))
    assert fingerprint(_message("hi")) != fingerprint(_message("hi", message_id="m2"))
    assert fingerprint(_message("hi")) != fingerprint(_message("hi", at=AT + timedelta(microseconds=1)))
    assert len(fingerprint(_message("hi"))) == DIGEST


def test_personal_fields_are_left_out_so_a_guess_cannot_be_confirmed_after_an_erasure() -> None:
    opened = _message("my card number is 4111 1111 1111 1111")
    erased = msgspec.structs.replace(opened, text=ERASED, contact=ERASED)
    sealed = msgspec.structs.replace(opened, text="rdenc1:AAAA", contact="rdenc1:BBBB")
    assert fingerprint(opened) == fingerprint(erased) == fingerprint(sealed)
    assert fingerprint(opened) == fingerprint(_message("a guess"))


def test_holds_finds_whole_digests_only() -> None:
    a, b = fingerprint(_message("x")), fingerprint(_message("x", message_id="m2"))
    assert holds(a + b, b) and holds(a + b, a)
    assert not holds(a + b, (a + b)[4:12])  # straddling two digests is not one of them
