"""A report's groups come a page at a time: ``group_by=conversation`` was one group per
conversation in one answer (found by a scale audit: 54 MB and 3.5 s at 100,000 conversations).
Pure here (``service_report`` with a ``GroupPage``); over the API and ``relaydesk report`` in
``test_report_pages_system.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from events import subjects
from events.store import StoredEvent
from services.reports import GroupPage, ReportQuery, ReportState, evolve, fold_all, service_report
from services.reports.metrics import group_index
from tests.reports.scenario import SLA, T0, Conv
from tests.reports.synthetic import busy_day


def _report(state: ReportState, query: ReportQuery, page: GroupPage | None = None, **kw: Any) -> dict[str, Any]:
    return service_report(state, query, now=query.end + timedelta(days=9), sla_seconds=SLA, page=page, **kw)


def test_pages_of_conversations_list_every_group_once_with_the_totals_on_the_first() -> None:
    events, day = busy_day(conversations=120)
    log = [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]
    state = fold_all(log)
    query = ReportQuery(start=day, end=day + timedelta(days=1), group_by="conversation")
    whole = _report(state, query)
    assert whole["total_groups"] == 120 and whole["next_after"] is None

    first = _report(state, query, GroupPage(limit=50))
    assert (first["count"], first["total_groups"]) == (50, 120)
    assert first["total"] == whole["total"] and first["by_hour"] == whole["by_hour"]
    rows, after, pages = list(first["groups"]), first["next_after"], 1
    index = group_index(state, query)  # as the API keeps it for the next pages
    while after is not None:
        page = _report(state, query, GroupPage(after=after, limit=50, totals=False), index=index)
        assert page["count"] <= 50 and page["total_groups"] == 120
        assert page["total"] is None and page["by_hour"] is None  # the first page's
        rows += page["groups"]
        after, pages = page["next_after"], pages + 1
    assert pages == 3
    assert rows == whole["groups"]  # every group once, in key order, the same figures

    # A page asked with no index kept finds the same groups.
    again = _report(state, query, GroupPage(after=first["next_after"], limit=50, totals=False))
    assert again["groups"] == whole["groups"][50:100]


def test_a_conversation_opening_between_pages_is_listed_once_after_the_cursor() -> None:
    events, day = busy_day(conversations=20)
    state = fold_all([StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)])
    query = ReportQuery(start=day, end=day + timedelta(days=1), group_by="conversation")
    first = _report(state, query, GroupPage(limit=10))
    seen = [g["key"] for g in first["groups"]]
    # Two conversations open meanwhile: one sorts before the cursor, one after.
    seq = len(events)
    for cid in ("conv0a", "zz-late"):
        for event in Conv("k-late", cid, "chat").open((day - T0).total_seconds() + 3600).events:
            seq += 1
            evolve(state, StoredEvent(seq=seq, subject=subjects.for_event(event), event=event))
    rest = _report(state, query, GroupPage(after=first["next_after"], limit=100, totals=False))
    later = [g["key"] for g in rest["groups"]]
    assert not set(seen) & set(later)
    assert "zz-late" in later and "conv0a" not in later
    assert sorted(seen + later) == sorted([f"conv{n}" for n in range(20)] + ["zz-late"])


def test_the_other_groupings_stay_whole_unless_a_limit_is_asked() -> None:
    events, day = busy_day(conversations=60)
    state = fold_all([StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)])
    query = ReportQuery(start=day, end=day + timedelta(days=1), group_by="agent")
    whole = _report(state, query)
    assert whole["count"] == whole["total_groups"] == 4 and whole["next_after"] is None
    first = _report(state, query, GroupPage(limit=3))
    rest = _report(state, query, GroupPage(after=first["next_after"], limit=3, totals=False))
    assert first["groups"] + rest["groups"] == whole["groups"] and rest["next_after"] is None
