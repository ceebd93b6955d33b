"""Delivery on a hostile log (see tests/unit/router/test_hostile_log.py): well-typed events
that contradict the log before them, folded by delivery's ``Facts`` through its service's
boundary (an event it cannot apply is quarantined, its sequence counts). What it makes of
them is used outside that boundary: each notice becomes a record under a KV key naming its
agent, and its body is sent as JSON. Both must hold for any notice it makes."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js.kv import VALID_KEY_RE

from events import subjects
from events.codec import Undecodable, decode_log_event, encode
from events.model import AgentOffered, ConversationOpened, DecisionReason, LogEvent, Requirements, RoutingRequested
from events.stored import StoredEvent
from services.delivery import records
from services.delivery.notices import Facts, Notice
from tests.unit.router.test_hostile_log import HOSTILE, aimed_at, valid_lifecycle

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# Ids a writer may put in an event's body (only the subject's ids are checked when decoded).
ODD_AGENTS = ("a0", "", "a b", "a.b", "*", "ä")


class Delivery:
    def __init__(self) -> None:
        self.facts = Facts(console_url="http://console", api_url="http://api")
        self.seq = 0
        self.notices: list[Notice] = []

    def append(self, event: LogEvent) -> None:
        subject = subjects.for_event(event)
        decoded = decode_log_event(encode(event), subject=subject)
        if isinstance(decoded, Undecodable):
            return
        self.seq += 1
        stored = StoredEvent(seq=self.seq, subject=subject, event=decoded)
        try:  # services.delivery.service._fold
            self.notices.extend(self.facts.apply(stored))
        except Exception:
            self.facts.state.last_seq = max(self.facts.state.last_seq, stored.seq)


def check_notices(delivery: Delivery) -> None:
    for notice in delivery.notices:
        assert VALID_KEY_RE.match(records.record_id(notice.seq, "everyone", notice.agent_id)), notice.agent_id
        msgspec.json.encode(notice.body)


def test_an_offer_to_an_id_no_agent_can_have_makes_no_notice() -> None:
    """It made a record key NATS refuses (``InvalidKeyError``, a NATS error): delivery stood
    down, took the lease again and met the same notice, for ever."""
    delivery = Delivery()
    ids = {"at": T0, "customer_id": "k0", "conversation_id": "c0"}
    delivery.append(ConversationOpened(**ids, channel="chat", contact="x"))  # type: ignore[arg-type]
    delivery.append(RoutingRequested(**ids, channel="chat", requirements=Requirements()))  # type: ignore[arg-type]
    reason = DecisionReason(rule="x")
    delivery.append(AgentOffered(**ids, agent_id="a b", expires_at=T0, reason=reason))  # type: ignore[arg-type]
    assert delivery.notices == []
    delivery.append(AgentOffered(**ids, agent_id="a0", expires_at=T0, reason=reason))  # type: ignore[arg-type]
    assert [n.agent_id for n in delivery.notices] == ["a0"]
    check_notices(delivery)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ops=st.lists(st.sampled_from(("valid", "hostile", "hostile")), min_size=3, max_size=40))
def test_every_notice_of_a_hostile_log_can_be_recorded_and_sent(data: st.DataObject, ops: list[str]) -> None:
    delivery = Delivery()
    for op in ops:
        if op == "valid":
            for event in valid_lifecycle(data, T0):
                delivery.append(event)
        else:
            event = aimed_at(data, delivery.facts.state, data.draw(HOSTILE))
            if "agent_id" in event.__struct_fields__ and not isinstance(event, subjects.AGENT_FACTS):
                event = msgspec.structs.replace(event, agent_id=data.draw(st.sampled_from(ODD_AGENTS)))  # type: ignore[call-arg]
            delivery.append(event)
    check_notices(delivery)
