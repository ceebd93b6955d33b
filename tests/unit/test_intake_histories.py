"""A customer's history folded on from where it was last read is the history read whole
(``services.intake.histories`` keeps one per customer and reads only what came since)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from events.model import (
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationResolved,
    CustomerCreated,
    CustomerProfileUpdated,
    CustomersMerged,
    LogEvent,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.intake.customer_history import LANGUAGE_TEXTS, CustomerHistory, fold_history, fold_into

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
FAMILY = ("cu1", "cu2")  # cu2 is merged into cu1 at some point
KINDS = ("opened", "received", "routed", "language", "resolved", "profile", "merged")


def event(kind: str, customer: str, n: int, conv: int) -> LogEvent:
    conversation_id = f"cv_{customer}_{conv}"
    match kind:
        case "opened":
            return ConversationOpened(
                at=NOW, customer_id=customer, conversation_id=conversation_id, channel="sms", contact="+1555"
            )
        case "received":
            return MessageReceived(
                at=NOW,
                customer_id=customer,
                conversation_id=conversation_id,
                channel="sms",
                message_id=f"msg{n}",
                provider_message_id=f"SM{n}",
                text=f"text {n}",
            )
        case "routed":
            return RoutingRequested(
                at=NOW,
                customer_id=customer,
                conversation_id=conversation_id,
                channel="sms",
                requirements=Requirements(language="es"),
            )
        case "language":
            return ConversationLanguageChanged(
                at=NOW, customer_id=customer, conversation_id=conversation_id, language="en", previous="es"
            )
        case "resolved":
            return ConversationResolved(at=NOW, customer_id=customer, conversation_id=conversation_id)
        case "profile":
            return CustomerProfileUpdated(at=NOW, customer_id=customer, preferred_language=f"l{n}")
        case _:
            return CustomersMerged(at=NOW, customer_id="cu1", merged_id="cu2")


steps = st.lists(
    st.tuples(st.sampled_from(FAMILY), st.sampled_from(KINDS), st.integers(0, 2)),
    min_size=1,
    max_size=60,
)


def log_of(drawn: list[tuple[str, str, int]]) -> list[StoredEvent]:
    out = [
        StoredEvent(
            seq=1,
            subject="rd.evt.c.cu1._customer",
            event=CustomerCreated(at=NOW, customer_id="cu1", identity="sms:+1555"),
        )
    ]
    for n, (customer, kind, conv) in enumerate(drawn, start=2):
        e = event(kind, customer, n, conv)
        owner = e.customer_id
        out.append(StoredEvent(seq=n, subject=f"rd.evt.c.{owner}.x", event=e))
    return out


@settings(max_examples=300, deadline=None)
@given(drawn=steps, reads=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 70)), max_size=8))
def test_folding_on_from_each_customers_last_read_is_the_whole_fold(
    drawn: list[tuple[str, str, int]], reads: list[tuple[int, int]]
) -> None:
    log = log_of(drawn)
    whole = fold_history(log, "cu1")
    # Each read takes each customer's events up to a point of its own (the customers of a
    # family are read one after another, so one's reads may reach further than another's),
    # never going back; the last read takes everything.
    history, read_to = CustomerHistory(), dict.fromkeys(FAMILY, 0)
    for upto in [*reads, (len(log), len(log))]:
        fresh: list[StoredEvent] = []
        for customer, reach in zip(FAMILY, upto, strict=True):
            reach = max(reach, read_to[customer])
            mine = [s for s in log if s.event.customer_id == customer]  # type: ignore[union-attr]
            fresh += [s for s in mine if read_to[customer] < s.seq <= reach]
            read_to[customer] = reach
        fold_into(history, fresh, "cu1")
    assert history == whole


def test_an_open_conversation_keeps_its_last_texts_and_a_resolved_one_none() -> None:
    drawn = [("cu1", "opened", 0)] + [("cu1", "received", 0)] * (LANGUAGE_TEXTS + 5) + [("cu1", "opened", 1)]
    drawn += [("cu1", "received", 1), ("cu1", "resolved", 1)]
    history = fold_history(log_of(drawn), "cu1")
    kept = history.texts["cv_cu1_0"]
    assert kept == [f"text {n}" for n in range(2 + 1 + 5, 2 + 1 + LANGUAGE_TEXTS + 5)]
    assert "cv_cu1_1" not in history.texts
    assert len(history.seen) == LANGUAGE_TEXTS + 6  # every message id is still known (redeliveries)
