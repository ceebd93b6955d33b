"""A message is dated when Relaydesk received it, whatever time its connector passed on.

``InboundMessage.at`` should be when the connector heard the message; an SDK connector may
pass its provider's time instead (1970, 2099, a retried webhook's), or its clock may have
stepped. Intake records ``MessageReceived.at`` (what orders, retains and measures a message)
within ``RECEIVED_SKEW`` of when JetStream stored it, and never after intake's own now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from events.model import InboundMessage, MessageReceived
from services.intake.customer_history import fold_history
from services.intake.plan import RECEIVED_SKEW, Triage, plan, received_at

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TRIAGE = Triage(identity="phone:+15551234567", language="en", skills={}, priority=0)


def message(at: datetime) -> InboundMessage:
    return InboundMessage(
        at=at, channel="telegram", provider="sdk", provider_message_id="M1", sender="+15551234567", text="hi"
    )


def received(at: datetime, *, stored: datetime | None = None) -> datetime:
    [event] = [
        e
        for e in plan(fold_history([]), "cu1", message(at), TRIAGE, NOW, stored=stored)
        if isinstance(e, MessageReceived)
    ]
    return event.at


def test_a_provider_time_passed_on_as_at_is_not_the_received_time() -> None:
    stored = NOW - timedelta(seconds=2)
    assert received(datetime(1970, 1, 1, tzinfo=UTC), stored=stored) == stored, "not expired at once"
    assert received(datetime(2099, 1, 1, tzinfo=UTC), stored=stored) == stored, "not kept past retention"
    assert received(datetime(2099, 1, 1, tzinfo=UTC)) == NOW, "never after intake recorded it"
    honest = NOW - timedelta(seconds=3)
    assert received(honest, stored=stored) == honest, "a connector's own receipt time stands"


offsets = st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)  # any offset, any century


@given(at=instants, shift=st.integers(-(10**7), 600))
def test_received_time_is_within_the_skew_of_storage_and_not_after_now(at: datetime, shift: int) -> None:
    stored = NOW + timedelta(seconds=shift)  # NATS's clock: behind intake's by a backlog, or a little ahead
    got = received_at(message(at), NOW, stored)
    assert got <= NOW
    assert got >= min(stored - RECEIVED_SKEW, NOW)
    assert got <= stored + RECEIVED_SKEW
    if stored - RECEIVED_SKEW <= at <= min(stored + RECEIVED_SKEW, NOW):
        assert got == at  # a plausible receipt time is kept as the connector gave it
