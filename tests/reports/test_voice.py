"""Voice figures from a hand-written log of calls, as the voice connector records them: the
call, status callbacks (``<CallSid>:<leg>:<status>``), callback requests and voicemails."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console

from events.model import LogEvent, MessageReceived
from events.store import StoredEvent
from services.reports.fold import fold_all
from services.reports.metrics import ReportQuery, service_report
from services.reports.projection import dump_snapshot, load_snapshot
from services.reports.render import print_report
from tests.reports.scenario import SLA, T0, Conv, at

VOICE_SLA = {**SLA, "voice": 20.0}
NOW = at(3600)
DAY = ReportQuery(start=T0 - timedelta(hours=1), end=T0 + timedelta(hours=2))


def message(conv: Conv, t: float, kind: str, pid: str, text: str = "") -> Conv:
    conv.events.append(
        MessageReceived(
            at=at(t),
            customer_id=conv.customer,
            conversation_id=conv.conversation,
            channel="voice",
            message_id=f"m-{conv.conversation}-{t}",
            provider_message_id=pid,
            text=text,
            metadata={"kind": kind, "platform": "voice", **({"auto": "1"} if kind == "call_status" else {})},
        )
    )
    return conv


def call(n: int) -> tuple[Conv, str]:
    """A call queued at T0 (its first message is the call itself, routed at once)."""
    sid = "CA" + f"{n:032x}"
    conv = Conv(f"caller{n}", f"call{n}", "voice")
    conv.open(0)
    return conv, sid


def status(conv: Conv, t: float, sid: str, leg: str, state: str) -> Conv:
    return message(conv, t, "call_status", f"{sid}:{leg}:{state}", f"Call {state}")


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i + 1, subject="rd.evt.c.x.y", event=e) for i, e in enumerate(events)]


def calls_log() -> list[LogEvent]:
    """V1 answered in SLA; V2 rang Bruno (no answer), answered late by Ava; V3 abandoned;
    V4 callback requested, then taken by Ava (the callback placed); V5 voicemail; V6 waiting;
    and a chat that is no call."""
    v1, s1 = call(1)
    v1.assign(10, "ava")
    status(v1, 130, s1, "dial", "completed")
    status(v1, 135, s1, "call", "completed")
    v2, s2 = call(2)
    v2.assign(5, "bruno")
    status(v2, 25, s2, "dial", "no-answer")
    v2.assign(40, "ava")
    status(v2, 340, s2, "dial", "completed")
    v3, s3 = call(3)
    status(v3, 50, s3, "call", "completed")
    v4, s4 = call(4)
    message(v4, 180, "callback_request", f"{s4}:callback", "Callback requested")
    status(v4, 185, s4, "call", "completed")
    v4.assign(600, "ava")
    v5, s5 = call(5)
    message(v5, 190, "voicemail", f"RE{s5[2:]}", "Voicemail")
    message(v5, 200, "transcript", "TR" + "1" * 32, "please call me")
    v6, _ = call(6)
    chat = Conv("chatter", "chat1", "chat").open(0).assign(5, "ava").resolve(300, "ava")
    return [e for c in (v1, v2, v3, v4, v5, v6, chat) for e in c.events]


def test_the_call_figures_of_a_day() -> None:
    report = service_report(fold_all(stored(calls_log())), DAY, now=NOW, sla_seconds=VOICE_SLA)
    voice = report["total"]["voice"]
    assert voice == {
        "calls": 6,
        "answered": 2,
        "answered_within_sla": 1,  # V1 rang Ava at 10 s; V2's answer rang at 40 s (> 20 s)
        "service_level": 0.1667,
        "abandoned": 1,  # V3: V4 asked for a callback before hanging up
        "abandon_rate": 0.1667,
        "missed": 3,  # V3, V4, V5
        "agent_no_answer": 1,  # Bruno's phone on V2
        "voicemails": 1,
        "callbacks_requested": 1,
        "callbacks_placed": 1,  # V4, taken after the caller left
        # V1: 10 s -> 130 s; V2: from the ring that was answered (40 s) to the end (340 s)
        "handle_seconds": {"count": 2, "mean": 210.0, "median": 210.0, "p90": 300.0},
    }


def test_only_voice_groups_carry_call_figures() -> None:
    query = ReportQuery(start=DAY.start, end=DAY.end, group_by="channel")
    report = service_report(fold_all(stored(calls_log())), query, now=NOW, sla_seconds=VOICE_SLA)
    by_channel = {g["key"]: g for g in report["groups"]}
    assert by_channel["chat"]["voice"] is None
    assert by_channel["voice"]["voice"]["calls"] == 6


def test_a_hang_up_reported_before_the_end_of_the_talk_is_no_abandon() -> None:
    v, sid = call(9)
    v.assign(3, "ava")
    status(v, 60, sid, "call", "completed")  # Twilio's two callbacks may arrive in either order
    status(v, 61, sid, "dial", "completed")
    report = service_report(fold_all(stored(v.events)), DAY, now=NOW, sla_seconds=VOICE_SLA)
    voice = report["total"]["voice"]
    assert (voice["answered"], voice["answered_within_sla"], voice["abandoned"], voice["missed"]) == (1, 1, 0, 0)
    assert voice["callbacks_placed"] == 0


def test_a_caller_who_hung_up_in_the_queue_is_abandoned() -> None:
    """The voice connector resolves the conversation at the hang-up (``:call:abandoned``), so
    the caller leg's own "completed" that follows is never on it."""
    v, sid = call(10)
    status(v, 30, sid, "call", "abandoned")
    report = service_report(fold_all(stored(v.events)), DAY, now=NOW, sla_seconds=VOICE_SLA)
    voice = report["total"]["voice"]
    assert (voice["answered"], voice["abandoned"], voice["missed"]) == (0, 1, 1)


def test_a_report_without_calls_has_no_voice_figures() -> None:
    chat = Conv("chatter", "chat1", "chat").open(0).assign(5, "ava")
    report = service_report(fold_all(stored(chat.events)), DAY, now=NOW, sla_seconds=VOICE_SLA)
    assert report["total"]["voice"] is None


def test_call_facts_survive_a_snapshot() -> None:
    state = fold_all(stored(calls_log()))
    snap = load_snapshot(dump_snapshot(state, state.last_seq))
    assert snap is not None
    again = service_report(snap.state, DAY, now=NOW, sla_seconds=VOICE_SLA)
    assert again["total"]["voice"] == service_report(state, DAY, now=NOW, sla_seconds=VOICE_SLA)["total"]["voice"]


def test_the_command_prints_a_calls_table() -> None:
    query = ReportQuery(start=DAY.start, end=DAY.end, group_by="agent")
    report = service_report(fold_all(stored(calls_log())), query, now=NOW, sla_seconds=VOICE_SLA)
    console = Console(record=True, width=160)
    print_report(report, console)
    text = console.export_text()
    assert "Calls by agent" in text
    assert "3m30s" in text  # the mean handle time, 210 s
