"""Errors and provider text as logged and stored: the values they quote (chosen by whoever sent
the message) and any phone number or address in them do not get through (``events.redact``)."""

from __future__ import annotations

import msgspec

from events.errors import describe_error
from events.model import ReplyOutcomeReported
from events.redact import redact_error, scrub


def test_a_validation_error_names_the_field_not_the_value() -> None:
    payload = (
        b'{"type": "reply_outcome_reported", "at": "2026-12-06T10:00:00Z", "channel": "sms", "customer_id": "cu_1",'
        b' "conversation_id": "cv_1", "reply_id": "rp_1", "outcome": "failed for Quillon +447700900456"}'
    )
    try:
        msgspec.json.decode(payload, type=ReplyOutcomeReported)
    except msgspec.ValidationError as err:
        described = describe_error(err)
    assert described == "ValidationError: Invalid enum value '…' - at `$.outcome`"


def test_other_errors_keep_their_words_but_no_address() -> None:
    assert redact_error("DecodeError: JSON is malformed: invalid character (byte 0)") == (
        "DecodeError: JSON is malformed: invalid character (byte 0)"
    )
    assert redact_error("refused quill.q@example.org") == "refused [email]"


def test_scrub_keeps_codes_and_times() -> None:
    assert scrub("smtp; 550 5.1.1 at 2026-12-06 for +1 (555) 123-0000") == "smtp; 550 5.1.1 at 2026-12-06 for [number]"
