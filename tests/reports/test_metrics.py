"""The metric fold and figures on a hand-written log: exact numbers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from events import subjects
from events.model import ConversationEscalated, ConversationOpened, ConversationResolved, LogEvent, MessageReceived
from events.store import StoredEvent
from services.reports import ReportQuery, ReportState, evolve, fold_all, service_report
from services.reports.conversation_figures import figures
from tests.reports.scenario import NOW, SLA, T0, Conv, at, scenario

DAY = ReportQuery(start=T0 - timedelta(hours=10), end=T0 + timedelta(hours=14))


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]


def report(events: list[LogEvent], query: ReportQuery = DAY) -> dict[str, Any]:
    return service_report(fold_all(stored(events)), query, now=NOW, sla_seconds=SLA)


def groups(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["key"]: g for g in body["groups"]}


def test_totals_are_exact() -> None:
    total = report(scenario())["total"]
    assert total["conversations"] == 4
    assert total["assigned"] == 3
    assert total["resolved"] == 3
    assert total["time_to_assign_seconds"] == {"count": 3, "mean": 73.333, "median": 100.0, "p90": 100.0}
    assert total["first_response_seconds"] == {"count": 3, "mean": 103.333, "median": 120.0, "p90": 160.0}
    assert total["handle_seconds"] == {"count": 3, "mean": 926.667, "median": 900.0, "p90": 1300.0}
    assert (total["transfers"], total["transferred_conversations"]) == (1, 1)
    # A is reopened by B (1 h later, same customer and channel); B is a reopen.
    assert (total["reopened"], total["reopens"], total["reopen_rate"]) == (1, 1, 0.3333)
    # Only C: A was reopened, B was transferred.
    assert (total["first_contact_resolutions"], total["fcr_rate"]) == (1, 0.3333)
    # A met (100 s of 300), B breached (explicit due 60 s), C met (20 s of 60), D waiting past 4 h.
    assert (total["sla_met"], total["sla_breached"], total["sla_attainment"]) == (2, 2, 0.5)
    offers = (total["offers"], total["offers_accepted"], total["offers_declined"], total["offers_expired"])
    assert offers == (4, 2, 1, 1)
    assert (total["decline_rate"], total["expiry_rate"]) == (0.25, 0.25)


def test_grouped_by_agent_channel_queue_and_day() -> None:
    events = scenario()
    by_agent = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="agent")))
    assert sorted(by_agent) == ["(unassigned)", "ava", "bruno", "chen"]
    # Conversations go to the agent who first took them: A chen, B and C ava, D nobody.
    assert by_agent["chen"]["conversations"] == 1
    assert by_agent["chen"]["first_response_seconds"]["mean"] == 160.0
    assert by_agent["ava"]["conversations"] == 2
    assert by_agent["ava"]["time_to_assign_seconds"]["mean"] == 60.0
    assert by_agent["ava"]["sla_attainment"] == 0.5
    # Offers go to the agent offered.
    assert (by_agent["ava"]["offers"], by_agent["ava"]["decline_rate"]) == (2, 0.5)
    assert (by_agent["bruno"]["offers"], by_agent["bruno"]["expiry_rate"], by_agent["bruno"]["conversations"]) == (
        1,
        1.0,
        0,
    )
    assert by_agent["(unassigned)"]["sla_breached"] == 1

    by_channel = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="channel")))
    assert {k: v["conversations"] for k, v in by_channel.items()} == {"chat": 1, "email": 1, "sms": 2}
    assert by_channel["sms"]["handle_seconds"]["mean"] == 1100.0
    assert by_channel["sms"]["reopen_rate"] == 0.5
    assert by_channel["chat"]["fcr_rate"] == 1.0

    by_queue = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="queue")))
    assert sorted(by_queue) == ["chat:general", "email:any", "sms:billing"]
    assert by_queue["sms:billing"]["offers"] == 3

    by_day = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="day")))
    assert list(by_day) == ["2026-11-23"]
    assert by_day["2026-11-23"]["conversations"] == 4

    by_conv = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="conversation")))
    assert by_conv["A"]["time_to_assign_seconds"]["mean"] == 100.0
    assert by_conv["B"]["sla_breached"] == 1


def test_hourly_series_of_wait_and_sla() -> None:
    hours = {h["hour"]: h for h in report(scenario())["by_hour"]}
    assert len(hours) == 24
    assert hours[10]["conversations"] == 1 and hours[10]["mean_wait_seconds"] == 100.0
    assert hours[11]["sla_attainment"] == 0.0  # B
    assert hours[12]["conversations"] == 2  # C met, D breached
    assert (hours[12]["mean_wait_seconds"], hours[12]["sla_attainment"]) == (20.0, 0.5)
    assert hours[3]["conversations"] == 0 and hours[3]["sla_attainment"] is None


def test_days_and_hours_are_the_teams_own_in_its_time_zone() -> None:
    """``tz``: a team in another zone saw its day split at UTC's midnight (a known limitation
    until 2026-12-07). The scenario's conversations open at 10:00 to 12:00 UTC."""
    events = scenario()
    utc = report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="day"))
    assert list(groups(utc)) == ["2026-11-23"] and utc["tz"] == "UTC"
    # At +14:00 the same moments are the next day, from midnight on.
    line = report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="day", tz="Pacific/Kiritimati"))
    assert list(groups(line)) == ["2026-11-24"] and line["tz"] == "Pacific/Kiritimati"
    assert line["from"] == "2026-11-23T14:00:00+14:00"
    assert line["total"] == utc["total"]  # the same conversations, only filed by another clock
    # Half-hour zones keep their hour: 10:00 UTC is 15:30 in Kolkata.
    hours = {
        h["hour"]: h for h in report(events, ReportQuery(start=DAY.start, end=DAY.end, tz="Asia/Kolkata"))["by_hour"]
    }
    assert (hours[15]["conversations"], hours[16]["conversations"], hours[17]["conversations"]) == (1, 1, 2)


def test_the_reopen_window_is_a_report_parameter() -> None:
    half_hour = ReportQuery(start=DAY.start, end=DAY.end, reopen_hours=0.5)
    total = report(scenario(), half_hour)["total"]
    assert (total["reopened"], total["reopen_rate"]) == (0, 0.0)
    assert (total["first_contact_resolutions"], total["fcr_rate"]) == (2, 0.6667)


def test_a_conversation_resolved_by_an_erasure_is_no_first_contact_resolution() -> None:
    """An operator's report read FCR 100% when its one resolution was an erasure's; later (a
    team lead's audit) the erasure still counted as resolved, the denominator of the rates."""
    served = Conv("x1", "S", "sms").open(0).assign(10, "ava").resolve(100, "ava")
    erased = Conv("x2", "E", "sms").open(0)
    erased.events.append(
        ConversationResolved(at=at(50), customer_id="x2", conversation_id="E", agent_id=None, erased=True)
    )
    total = report([*served.events, *erased.events])["total"]
    assert (total["resolved"], total["first_contact_resolutions"], total["fcr_rate"]) == (1, 1, 1.0)
    assert (total["erased"], total["abandoned"]) == (1, 0)


def test_a_conversation_an_agent_started_counts_as_assigned_without_a_time_to_assign() -> None:
    """Found by an audit: outbound-first conversations (opened assigned, never routed) read
    as 0 assigned on the agent's row."""
    started = Conv("x1", "O", "email")
    started.events += [
        ConversationOpened(
            at=at(0), customer_id="x1", conversation_id="O", channel="email", contact="a@b.c", initiated_by="agent:sue"
        ),
    ]
    started.assign(0, "sue").resolve(600, "sue")
    by_agent = groups(report(started.events, ReportQuery(start=DAY.start, end=DAY.end, group_by="agent")))
    assert (by_agent["sue"]["conversations"], by_agent["sue"]["assigned"]) == (1, 1)
    assert by_agent["sue"]["time_to_assign_seconds"]["count"] == 0  # never waited to be routed


def test_a_new_conversation_on_another_channel_is_not_a_reopen() -> None:
    a = Conv("x1", "X", "sms").open(0).assign(10, "ava").resolve(100, "ava")
    b = Conv("x1", "Y", "chat").open(200).assign(210, "ava").resolve(300, "ava")
    c = Conv("x1", "Z", "sms").open(400)  # the SMS conversation's first new contact: a reopen
    d = Conv("x1", "W", "sms").open(500)  # a second new one does not reopen X again
    state = fold_all(stored([*a.events, *b.events, *c.events, *d.events]))
    x, z, w = state.conversations["X"], state.conversations["Z"], state.conversations["W"]
    assert (x.next_conversation_id, z.previous_conversation_id, w.previous_conversation_id) == ("Z", "X", None)
    assert state.conversations["Y"].previous_conversation_id is None


def test_window_selects_conversations_by_opening_and_offers_by_offer_time() -> None:
    after_a = ReportQuery(start=at(3600), end=at(3 * 3600))
    total = report(scenario(), after_a)["total"]
    assert total["conversations"] == 3  # B, C, D
    assert total["offers"] == 1  # C's


def test_waiting_conversation_is_not_counted_for_sla_before_its_due_time() -> None:
    d = Conv("y", "D", "email").open(0)
    conv = fold_all(stored(d.events)).conversations["D"]
    assert figures(conv, now=at(60), sla_seconds=SLA, reopen_hours=24).sla is None
    assert figures(conv, now=at(14_401), sla_seconds=SLA, reopen_hours=24).sla == "breached"


def test_offers_withdrawn_by_a_transfer_are_not_answered() -> None:
    c = Conv("z", "T", "chat").open(0).offer(5, "ava").transfer(10, "", "chen").offer(15, "chen").accept(20, "chen")
    state = fold_all(stored(c.events))
    assert [(o.agent_id, o.outcome) for o in state.offers] == [("ava", "withdrawn"), ("chen", "accepted")]
    total = service_report(state, DAY, now=NOW, sla_seconds=SLA)["total"]
    assert (total["offers"], total["decline_rate"], total["expiry_rate"]) == (2, 0.0, 0.0)


def test_a_stale_accept_for_another_agent_assigns_nothing() -> None:
    c = Conv("s", "S", "chat").open(0).offer(5, "ava").accept(6, "bruno")
    conv = fold_all(stored(c.events)).conversations["S"]
    assert conv.first_assigned_at is None


@pytest.mark.parametrize("split", [1, 7, 20])
def test_replay_gives_the_same_state_and_overlaps_count_nothing_twice(split: int) -> None:
    log = stored(scenario())
    once = fold_all(log)
    state = ReportState()
    for e in log[:split]:
        evolve(state, e)
    for e in log:  # a replay of an overlapping range
        evolve(state, e)
    assert msgspec.json.encode(state) == msgspec.json.encode(once)
    again = service_report(fold_all(log), DAY, now=NOW, sla_seconds=SLA)
    assert again == service_report(once, DAY, now=NOW, sla_seconds=SLA)


def test_reopens_follow_a_customer_merge() -> None:
    from events.model import CustomersMerged

    a = Conv("old", "A", "sms").open(0).assign(10, "ava").resolve(100, "ava")
    held = Conv("old", "H", "chat").open(50).assign(60, "ava")  # open when merged; resolved after
    merge = CustomersMerged(at=at(200), customer_id="new", merged_id="old")
    b = Conv("new", "B", "sms").open(3600)  # the survivor writes by SMS: a reopen of A
    held_end = Conv("old", "H", "chat").resolve(4000, "ava")
    c = Conv("new", "C", "chat").open(5000)  # ... and by chat: a reopen of H
    state = fold_all(stored([*a.events, *held.events, merge, *b.events, *held_end.events, *c.events]))
    assert state.conversations["B"].previous_conversation_id == "A"
    assert state.conversations["C"].previous_conversation_id == "H"
    assert state.merged_into == {"old": "new"}


def test_a_team_leads_day_abandons_follow_ups_escalations_and_outbound_first_responses() -> None:
    """Found by a team lead's audit, each figure checked by hand: customers who left before an
    agent counted as resolved and as first-contact resolutions; an agent's own follow-up as
    the customer's reopen; an escalation did not cost the FCR; an outbound conversation's
    first response was 0 s (her opening message came before the customer's)."""
    handled = Conv("c1", "H", "chat").open(0).assign(10, "ava").reply(30, "ava").resolve(300, "ava")
    left = Conv("c2", "L", "chat").open(0).resolve(600)  # the customer left after 10 minutes
    escalated = Conv("c3", "E", "sms").open(0).assign(10, "ava").reply(40, "ava")
    escalated.events.append(ConversationEscalated(at=at(60), customer_id="c3", conversation_id="E", to_tier=2))
    escalated.assign(90, "fay").resolve(400, "fay")
    # chen resolves F, then writes first to the same customer (a follow-up), who answers later.
    followed = Conv("c4", "F", "email").open(0).assign(5, "chen").reply(20, "chen").resolve(100, "chen")
    follow_up = Conv("c4", "G", "email")
    follow_up.events.append(
        ConversationOpened(
            at=at(200),
            customer_id="c4",
            conversation_id="G",
            channel="email",
            contact="a@b.c",
            initiated_by="agent:chen",
        )
    )
    follow_up.assign(200, "chen").reply(200, "chen")
    follow_up.events.append(
        MessageReceived(
            at=at(800),
            customer_id="c4",
            conversation_id="G",
            channel="email",
            message_id="m-g",
            provider_message_id="p-g",
            text="thanks",
        )
    )
    follow_up.reply(900, "chen").resolve(1000, "chen")
    events = [*handled.events, *left.events, *escalated.events, *followed.events, *follow_up.events]
    by_conv = groups(report(events, ReportQuery(start=DAY.start, end=DAY.end, group_by="conversation")))
    total = report(events)["total"]
    # H, E, F and G resolved; L abandoned. FCR: H, F (no reopen: G is chen's own), G; not E.
    assert (total["resolved"], total["abandoned"], total["abandon_rate"]) == (4, 1, 0.2)
    assert (total["first_contact_resolutions"], total["fcr_rate"]) == (3, 0.75)
    assert (total["escalations"], total["escalated_conversations"], total["reopened"]) == (1, 1, 0)
    assert (by_conv["L"]["resolved"], by_conv["L"]["first_contact_resolutions"]) == (0, 0)
    # First responses: H 30, E 40, F 20, and G 100 (the customer's answer at 800, the reply at 900).
    assert by_conv["G"]["first_response_seconds"]["mean"] == 100.0
    assert total["first_response_seconds"] == {"count": 4, "mean": 47.5, "median": 35.0, "p90": 100.0}
