"""``group_by=tier``: volumes per customer tier (the routing policy's ``customer_tiers``), as of
the conversation's routing request, and snapshots written before the fold kept tiers."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from events import subjects
from events.model import (
    AgentOffered,
    ConversationEvent,
    ConversationOpened,
    CustomerProfileUpdated,
    CustomersMerged,
    DecisionReason,
    LogEvent,
    OfferDeclined,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.cli_parser import build_parser
from services.reports import fold_all, parse_query, service_report
from services.reports.fold import REPORT_FOLD_VERSION, tier_of
from services.reports.projection import ReportSnapshot, dump_snapshot, load_snapshot

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, tzinfo=UTC)
SLA = {"chat": 60.0}
REASON = DecisionReason(rule="best_fit")


def _conv(kind: type[ConversationEvent], minute: int, customer: str, cid: str, **fields: Any) -> Any:
    return kind(at=T0 + timedelta(minutes=minute), customer_id=customer, conversation_id=cid, **fields)


def _inbound(minute: int, customer: str, cid: str) -> list[Any]:
    return [
        _conv(ConversationOpened, minute, customer, cid, channel="chat", contact="x"),
        _conv(RoutingRequested, minute, customer, cid, channel="chat", requirements=Requirements()),
    ]


def _profile(minute: int, customer: str, tier: str) -> CustomerProfileUpdated:
    return CustomerProfileUpdated(at=T0 + timedelta(minutes=minute), customer_id=customer, tier=tier)


def _merged(minute: int, survivor: str, merged: str) -> CustomersMerged:
    return CustomersMerged(at=T0 + timedelta(minutes=minute), customer_id=survivor, merged_id=merged)


def _log() -> list[LogEvent]:
    return [
        _profile(0, "k1", "gold"),
        *_inbound(1, "k1", "c1"),
        _conv(AgentOffered, 2, "k1", "c1", agent_id="ava", expires_at=T0 + timedelta(minutes=3), reason=REASON),
        _conv(OfferDeclined, 2, "k1", "c1", agent_id="ava"),
        _profile(3, "k1", "platinum"),  # after c1 was routed: c1 stays gold
        *_inbound(4, "k2", "c2"),  # no profile: standard
        _merged(5, "k1", "k3"),
        *_inbound(6, "k3", "c3"),  # merged into k1: k1's profile stands (platinum)
        _profile(7, "k2", "gold"),
        # An agent's outbound conversation is never routed: the tier at its opening.
        _conv(ConversationOpened, 8, "k2", "c4", channel="chat", contact="x", initiated_by="agent:ava"),
    ]


def _stored(events: Sequence[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]


def _by_tier(state: Any) -> dict[str, tuple[int, int]]:
    query = parse_query({"from": "2026-11-23", "to": "2026-11-23", "group_by": "tier"}, NOW)
    body = service_report(state, query, now=NOW, sla_seconds=SLA)
    return {g["key"]: (g["conversations"], g["offers_declined"]) for g in body["groups"]}


def test_group_by_tier_counts_conversations_and_offers_by_the_customers_tier_at_routing() -> None:
    state = fold_all(_stored(_log()))
    assert _by_tier(state) == {"gold": (2, 1), "platinum": (1, 0), "standard": (1, 0)}
    assert build_parser().parse_args(["report", "--group-by", "tier"]).group_by == "tier"


def test_a_customer_merged_again_keeps_the_first_survivors_tier() -> None:
    # As router.customers.merge: the first merge in the log stands.
    events: list[LogEvent] = [
        _profile(0, "k2", "gold"),
        _profile(0, "k3", "platinum"),
        _merged(1, "k2", "k1"),
        _merged(2, "k3", "k1"),
    ]
    state = fold_all(_stored(events))
    assert tier_of(state, "k1") == "gold"


def test_a_snapshot_from_before_tiers_decodes_and_is_folded_again() -> None:
    state = fold_all(_stored(_log()))
    # The snapshot as version 8 wrote it: the same msgpack, less the fields version 9 added.
    old: dict[str, Any] = msgspec.msgpack.decode(
        msgspec.msgpack.encode(ReportSnapshot(version=8, through=state.last_seq, state=state))
    )
    old["state"]["fold_version"] = 8
    del old["state"]["tiers"]
    for conv in old["state"]["conversations"].values():
        del conv["customer_tier"]
    data = zlib.compress(msgspec.msgpack.encode(old))
    # It still decodes (the new fields have defaults): no error on an API's start ...
    decoded = msgspec.msgpack.decode(zlib.decompress(data), type=ReportSnapshot)
    assert decoded.state.tiers == {} and decoded.state.conversations["c1"].customer_tier is None
    # ... and, holding no tiers, is set aside: the log is folded again from the start.
    assert load_snapshot(data) is None
    # A snapshot of this version keeps them.
    again = load_snapshot(dump_snapshot(state, state.last_seq))
    assert again is not None and again.state.fold_version == REPORT_FOLD_VERSION
    assert _by_tier(again.state) == _by_tier(state)
