"""Found by an audit of the service reports: an agent credited for an assignment the router
never made, date forms read as instants, and times whose arithmetic overflowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import REGISTRY

from events import subjects
from events.model import ConversationTransferred, LogEvent, MessageSent, Requirements, RoutingRequested
from events.store import StoredEvent
from router.fold import evolve as router_evolve
from router.state import RouterState
from services.reports import ReportQuery, fold_all, service_report
from services.reports import metrics as metrics_module
from services.reports.metrics import SKIP_WHERE
from services.reports.projection import BadQuery, dump_snapshot, load_snapshot, parse_query
from tests.reports.scenario import NOW, SLA, T0, Conv, at, scenario

DAY = ReportQuery(start=T0 - timedelta(hours=10), end=T0 + timedelta(hours=14))


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]


def by_agent(events: list[LogEvent]) -> dict[str, dict[str, Any]]:
    query = ReportQuery(start=DAY.start, end=DAY.end, group_by="agent")
    body = service_report(fold_all(stored(events)), query, now=NOW, sla_seconds=SLA)
    return {g["key"]: g for g in body["groups"]}


def router_holder(events: list[LogEvent], conversation_id: str) -> str | None:
    state = RouterState()
    for s in stored(events):
        router_evolve(state, s.seq, s.subject, s.event)
    view = state.conversations.get(conversation_id)
    return None if view is None else view.agent_id


# --- 1. decisions on a conversation the router has no view of --------------------------------


def test_decisions_before_the_opening_credit_nobody_as_in_the_router() -> None:
    """bruno's assignment (and an offer he then accepts) published before the conversation was
    opened: the router ignores them and gives it to ava; so must the report."""
    early = Conv("c1", "A", "chat").assign(-5, "bruno")
    offered_early = Conv("c2", "B", "chat").offer(-5, "bruno")
    a = Conv("c1", "A", "chat").open(0).assign(30, "ava")
    b = Conv("c2", "B", "chat").open(0).accept(10, "bruno").offer(20, "ava").accept(40, "ava")
    events = [*early.events, *offered_early.events, *a.events, *b.events]
    assert (router_holder(events, "A"), router_holder(events, "B")) == ("ava", "ava")

    groups = by_agent(events)
    assert sorted(groups) == ["ava"]
    assert groups["ava"]["conversations"] == 2
    assert groups["ava"]["time_to_assign_seconds"] == {"count": 2, "mean": 35.0, "median": 35.0, "p90": 40.0}
    assert (groups["ava"]["offers"], groups["ava"]["offers_accepted"]) == (1, 1)


def test_a_mid_life_event_alone_makes_no_conversation() -> None:
    """Only an opening or a routing request starts a conversation (router.fold._CREATING)."""
    ghost = Conv("c9", "G", "sms").assign(0, "bruno").reply(10, "bruno").resolve(20, "bruno")
    ghost.events += [
        ConversationTransferred(at=at(15), customer_id="c9", conversation_id="G", from_agent="bruno", to_agent="ava"),
        MessageSent(at=at(16), customer_id="c9", conversation_id="G", channel="sms", reply_id="late"),
    ]
    state = fold_all(stored(ghost.events))
    assert state.conversations == {}
    assert state.offers == []
    assert state.last_seq == len(ghost.events)
    # Routed without an opening (the router creates its view on either): a conversation.
    routed = RoutingRequested(
        at=at(30), customer_id="c9", conversation_id="R", channel="sms", requirements=Requirements()
    )
    assigned = Conv("c9", "R", "sms").assign(50, "ava").events
    assert router_holder([routed, *assigned], "R") == "ava"
    assert by_agent([*ghost.events, routed, *assigned])["ava"]["time_to_assign_seconds"]["mean"] == 20.0


def test_an_assignment_after_the_resolution_counts_nowhere() -> None:
    """The router drops a resolved conversation's view: a later assignment is ignored, even
    after a routing request (a resolved conversation is never routed again: that request can
    only be a re-published one, router.replays)."""
    left = Conv("c1", "L", "chat").open(0).resolve(100)  # the customer left: abandoned
    late = Conv("c1", "L", "chat").offer(150, "bruno").accept(160, "bruno").assign(200, "bruno")
    events = [*left.events, *late.events]
    assert router_holder(events, "L") is None
    groups = by_agent(events)
    assert sorted(groups) == ["(unassigned)"]
    assert (groups["(unassigned)"]["abandoned"], groups["(unassigned)"]["offers"]) == (1, 0)

    rerouted = RoutingRequested(
        at=at(180), customer_id="c1", conversation_id="L", channel="chat", requirements=Requirements()
    )
    again = [*left.events, rerouted, *Conv("c1", "L", "chat").assign(200, "bruno").events]
    assert router_holder(again, "L") is None
    assert fold_all(stored(again)).conversations["L"].first_agent is None


def test_the_shared_scenario_keeps_its_figures() -> None:
    body = service_report(fold_all(stored(scenario())), DAY, now=NOW, sla_seconds=SLA)
    assert (body["total"]["conversations"], body["total"]["assigned"], body["total"]["offers"]) == (4, 3, 4)


# --- 2. every ISO date form is a whole day ---------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("20261207", "20261207", ("2026-12-07", "2026-12-08")),
        ("2026-12-07", "2026-12-07", ("2026-12-07", "2026-12-08")),
        ("2026-W49-1", "2026-W49-7", ("2026-11-30", "2026-12-07")),  # Monday to the end of Sunday
        ("2026W491", "2026W497", ("2026-11-30", "2026-12-07")),
        (" 20261207 ", "2026-12-08", ("2026-12-07", "2026-12-09")),
    ],
)
def test_any_iso_date_form_is_a_whole_day(start: str, end: str, expected: tuple[str, str]) -> None:
    query = parse_query({"from": start, "to": end}, NOW)
    midnight = [datetime.fromisoformat(day).replace(tzinfo=UTC) for day in expected]
    assert (query.start, query.end) == tuple(midnight)


def test_date_times_stay_instants() -> None:
    query = parse_query({"from": "20261207T08:00:00Z", "to": "2026-12-07T10:30:00+01:00"}, NOW)
    assert query.start == datetime(2026, 12, 7, 8, tzinfo=UTC)
    assert query.end == datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    naive = parse_query({"from": "2026-12-07T00:00", "to": "2026-12-07 06:00"}, NOW)
    assert (naive.start, naive.end) == (datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 7, 6, tzinfo=UTC))


def test_dates_and_offset_less_times_are_read_in_the_reports_time_zone() -> None:
    # Paris moves to summer time on 2026-03-29: that day is 23 hours long there.
    spring = parse_query({"from": "2026-03-29", "to": "2026-03-29", "tz": "Europe/Paris"}, NOW)
    assert (spring.start, spring.end) == (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    assert spring.tz == "Europe/Paris"
    naive = parse_query({"from": "2026-12-07T08:00", "to": "2026-12-07T15:00Z", "tz": "America/New_York"}, NOW)
    assert (naive.start, naive.end) == (datetime(2026, 12, 7, 13, tzinfo=UTC), datetime(2026, 12, 7, 15, tzinfo=UTC))
    assert parse_query({}, NOW).tz == parse_query({"tz": " "}, NOW).tz == "UTC"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"tz": "Mars/Olympus_Mons"}, "tz must be an IANA time zone such as Europe/Paris"),
        ({"tz": "../../etc/passwd"}, "tz must be an IANA time zone"),
        ({"tz": "America"}, "tz must be an IANA time zone"),  # a folder of the zone database
        ({"tz": "America/Argentina"}, "tz must be an IANA time zone"),
        ({"tz": "Europe/" + "x" * 100}, "…'"),
        ({"from": "0001-01-01T00:00Z", "to": "0001-01-02", "tz": "America/Los_Angeles"}, "within the years 1 to"),
        ({"to": "2026-341"}, "to must be an ISO date (2026-11-23) or date-time"),
        ({"from": "2026-12"}, "from must be an ISO date (2026-11-23) or date-time"),
        ({"from": "2026-W54-1"}, "from must be an ISO date"),
        ({"to": "99991231"}, "to '99991231' is out of range"),
        ({"from": "20261208", "to": "20261207"}, "must be before to"),
    ],
)
def test_what_does_not_parse_is_a_clear_400(params: dict[str, str], reason: str) -> None:
    with pytest.raises(BadQuery) as refused:
        parse_query(params, NOW)
    assert reason in str(refused.value)


# --- 3. far times and the largest SLA a policy allows ----------------------------------------


def late(conversation: str, customer: str = "late") -> Conv:
    """Routed in the last minute the decoder accepts (events/codec.py: before 2200)."""
    c = Conv(customer, conversation, "chat")
    last = (datetime(2199, 12, 31, 23, 59, tzinfo=UTC) - T0).total_seconds()
    return c.open(last).assign(last + 30, "ava")


@pytest.mark.parametrize("sla", [1e12, 1e14, 1.7e308])
def test_the_largest_sla_on_the_latest_time_does_not_break_a_report(sla: float) -> None:
    events = [*late("Z").events, *scenario()]
    state = fold_all(stored(events))
    query = ReportQuery(start=T0 - timedelta(days=1), end=datetime(2200, 1, 1, tzinfo=UTC))
    body = service_report(state, query, now=datetime(2200, 1, 1, tzinfo=UTC), sla_seconds={**SLA, "chat": sla})
    total = body["total"]
    assert total["conversations"] == 5
    # Due after the last time there is: assigned, so met (C too: its 20 s are well within).
    assert (total["sla_met"], total["sla_breached"]) == (3, 2)


@pytest.mark.parametrize(
    ("due", "sla"),
    [
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "met"),  # past the last UTC time
        (datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "breached"),  # before the first
    ],
)
def test_an_explicit_due_time_at_the_edge_of_the_calendar_is_folded(due: datetime, sla: str) -> None:
    """The decoder checks event times, not ``requirements.sla_due``: its UTC time may not exist."""
    c = Conv("e", "E", "chat").open(0, sla_due=due).assign(30, "ava")
    state = fold_all(stored(c.events))
    assert state.conversations["E"].routed_at == T0
    query = ReportQuery(start=DAY.start, end=DAY.end, group_by="conversation")
    row = service_report(state, query, now=NOW, sla_seconds=SLA)["groups"][0]
    assert (row["sla_met"], row["sla_breached"]) == ((1, 0) if sla == "met" else (0, 1))
    snap = load_snapshot(dump_snapshot(state, state.last_seq))  # and the snapshot keeps it
    assert snap is not None and snap.state.conversations["E"].sla_due == state.conversations["E"].sla_due


def test_a_conversation_whose_figures_overflow_is_skipped_said_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever arithmetic a conversation's times still defeat costs that conversation's
    figures, not the report."""
    real = metrics_module.figures

    def failing(conv: Any, **kwargs: Any) -> Any:
        if conv.conversation_id == "D":
            raise OverflowError("date value out of range")
        return real(conv, **kwargs)

    monkeypatch.setattr(metrics_module, "figures", failing)
    before = REGISTRY.get_sample_value("relaydesk_skipped_total", {"where": SKIP_WHERE}) or 0.0
    body = service_report(fold_all(stored(scenario())), DAY, now=NOW, sla_seconds=SLA)
    assert body["total"]["conversations"] == 3
    assert REGISTRY.get_sample_value("relaydesk_skipped_total", {"where": SKIP_WHERE}) == before + 1
