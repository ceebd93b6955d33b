"""The report projection on a hostile log (see tests/unit/router/test_hostile_log.py): well-typed
events that contradict the log before them, folded one at a time through the projection's
boundary (``ReportProjection._fold_new``: an event ``evolve`` cannot apply is quarantined and
only its sequence counts). Then what users read must hold: the service report for every
grouping and a few windows (the figures of each conversation, the buckets, the hourly series),
encoded as the API encodes it and drawn as a table as the CLI draws it; the snapshot round
trip gives the same state; the state's own indexes agree with its facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from events import subjects
from events.codec import Undecodable, decode_log_event, encode
from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationEvent,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomersMerged,
    DecisionReason,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)
from events.stored import StoredEvent
from services.reports import GroupPage, ReportQuery, ReportState, evolve, service_report
from services.reports.fold import REPORT_FOLD_VERSION
from services.reports.metrics import GROUP_BYS
from services.reports.projection import dump_snapshot, load_snapshot
from services.reports.render import table
from tests.unit.router.test_hostile_log import HOSTILE, _event_strategy, valid_lifecycle

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SLA = {"chat": 60.0, "email": 3600.0}
READ_HERE = st.one_of(
    *(
        _event_strategy(cls)
        for cls in (
            AgentOffered,
            ConversationAssigned,
            ConversationEscalated,
            ConversationOpened,
            ConversationReleased,
            ConversationResolved,
            ConversationTransferred,
            CustomersMerged,
            MessageReceived,
            MessageSent,
            OfferAccepted,
            OfferDeclined,
            OfferExpired,
            ReplyRequested,
            RoutingRequested,
        )
    )
)
WINDOWS = (
    (T0 - timedelta(days=1), T0 + timedelta(days=1)),
    (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)),
    (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)),
)


class Projection:
    def __init__(self) -> None:
        self.state = ReportState()
        self.seq = 0
        self.refused: list[str] = []
        self.stored: list[StoredEvent] = []

    def append(self, event: LogEvent) -> None:
        subject = subjects.for_event(event)
        decoded = decode_log_event(encode(event), subject=subject)
        if isinstance(decoded, Undecodable):
            return
        self.seq += 1
        stored = StoredEvent(seq=self.seq, subject=subject, event=decoded)
        self.stored.append(stored)
        if not subject.startswith("rd.evt.c."):
            return  # the projection reads rd.evt.c.> alone
        before = msgspec.msgpack.encode(self.state)
        try:  # ReportProjection._fold_new
            evolve(self.state, stored)
        except Exception as err:
            self.refused.append(f"{type(decoded).__name__}: {err!r}")
            after = msgspec.msgpack.encode(
                msgspec.structs.replace(self.state, last_seq=msgspec.msgpack.decode(before, type=ReportState).last_seq)
            )
            assert after == before, f"{type(decoded).__name__} raised {err!r} after changing the state"
            self.state.last_seq = max(self.state.last_seq, stored.seq)


def aimed(data: st.DataObject, state: ReportState, event: LogEvent) -> LogEvent:
    """``event``, most times about a conversation the fold holds (its ids, its agent)."""
    conversations = sorted(state.conversations.items())
    if not conversations or not isinstance(event, ConversationEvent) or data.draw(st.integers(0, 3)) == 0:
        return event
    cid, conv = data.draw(st.sampled_from(conversations))
    event = msgspec.structs.replace(event, customer_id=conv.customer_id, conversation_id=cid)
    if "agent_id" in event.__struct_fields__ and conv.agent_id is not None and data.draw(st.booleans()):
        event = msgspec.structs.replace(event, agent_id=conv.agent_id)  # type: ignore[call-arg]
    return event


def check_report(projection: Projection, now: datetime) -> None:
    state = projection.state
    for cid, index in state.open_offer.items():
        offer = state.offers[index]
        assert offer.conversation_id == cid and offer.outcome == "pending"
    for key, cid in state.last_resolved.items():
        assert state.conversations[cid].resolved_at is not None, key
    for cid, conv in state.conversations.items():
        assert conv.conversation_id == cid
    snap = load_snapshot(dump_snapshot(state, projection.seq))
    assert snap is not None and snap.state == state and snap.version == REPORT_FOLD_VERSION
    console = Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115
    for start, end in WINDOWS:
        for group_by in (None, *GROUP_BYS):
            query = ReportQuery(start=start, end=end, group_by=group_by, tz="Europe/Paris")
            body = service_report(state, query, now=now, sla_seconds=SLA)
            report = msgspec.json.decode(msgspec.json.encode(body))
            if start == WINDOWS[0][0]:
                console.print(table(report))  # as ``relaydesk report`` shows it
            if group_by is not None and body["total_groups"] > 1:
                page = service_report(state, query, now=now, sla_seconds=SLA, page=GroupPage(limit=1))
                msgspec.json.encode(page)
    console.file.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    ops=st.lists(st.sampled_from(("valid", "hostile", "hostile", "hostile", "replay")), min_size=5, max_size=40),
)
def test_a_hostile_log_reports_without_breaking(data: st.DataObject, ops: list[str]) -> None:
    projection = Projection()
    for op in ops:
        if op == "valid":
            for event in valid_lifecycle(data, T0):
                projection.append(event)
        elif op == "hostile":
            projection.append(aimed(data, projection.state, data.draw(st.one_of(HOSTILE, READ_HERE, READ_HERE))))
        elif projection.stored:
            projection.append(data.draw(st.sampled_from(projection.stored)).event)  # type: ignore[arg-type]
    check_report(projection, T0 + timedelta(hours=3))


def test_an_event_naming_another_customers_conversation_is_not_folded_into_it() -> None:
    """Folded, a hand-written resolution under another customer resolved the conversation
    (its handle time, its agent credited) and an assignment there credited another agent:
    the router leaves that conversation alone (``router.fold.other_customer``)."""
    projection = Projection()
    ids = {"at": T0, "conversation_id": "c0"}
    reason = DecisionReason(rule="x")
    projection.append(ConversationOpened(**ids, customer_id="k0", channel="chat", contact="x"))  # type: ignore[arg-type]
    projection.append(RoutingRequested(**ids, customer_id="k0", channel="chat", requirements=Requirements()))  # type: ignore[arg-type]
    projection.append(ConversationAssigned(**ids, customer_id="k1", agent_id="a1", channel="chat", reason=reason))  # type: ignore[arg-type]
    projection.append(ConversationResolved(**ids, customer_id="k1", agent_id="a1"))  # type: ignore[arg-type]
    conv = projection.state.conversations["c0"]
    assert (conv.customer_id, conv.first_agent, conv.resolved_at) == ("k0", None, None)
    check_report(projection, T0 + timedelta(hours=3))
