"""A report's window as a supervisor gives it: days in her own time zone across the daylight-saving
changes, times on her clock, a window the wrong way round, a time zone that is no zone, ten years."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events import subjects
from events.model import LogEvent
from events.store import StoredEvent
from services.reports import BadQuery, fold_all, parse_query, service_report
from tests.reports.scenario import SLA, T0, Conv

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]


def opened_at(instant: datetime, cid: str) -> list[LogEvent]:
    return Conv("k", cid, "chat").open((instant - T0).total_seconds()).events


@pytest.mark.parametrize(
    ("tz", "to", "first_midnight", "first_hour"),
    [
        # Clocks went back on 2026-10-25 (Berlin) and 2026-11-01 (New York): 7 x 24 h before `to`
        # began the window at 01:00 on the first day, whose first hour was left out.
        ("Europe/Berlin", "2026-10-31", datetime(2026, 10, 24, 22, 0, tzinfo=UTC), "2026-10-25T00:30:00+02:00"),
        ("America/New_York", "2026-11-07", datetime(2026, 11, 1, 4, 0, tzinfo=UTC), "2026-11-01T00:30:00-04:00"),
        ("Europe/Berlin", "2026-04-04", datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "2026-03-29T00:30:00+01:00"),
    ],
)
def test_without_from_a_plain_to_is_its_day_and_the_six_before_it_on_the_teams_clock(
    tz: str, to: str, first_midnight: datetime, first_hour: str
) -> None:
    query = parse_query({"to": to, "tz": tz, "group_by": "day"}, NOW)
    assert query.start == first_midnight
    body = service_report(
        fold_all(stored(opened_at(datetime.fromisoformat(first_hour), "early"))), query, now=NOW, sla_seconds=SLA
    )
    assert body["from"].startswith(first_hour[:10] + "T00:00:00")
    assert [g["key"] for g in body["groups"]] == [first_hour[:10]]  # its conversation in the first hour counts


def test_without_from_or_to_the_window_is_the_week_to_now() -> None:
    query = parse_query({"tz": "Europe/Berlin"}, NOW)
    assert (query.start, query.end) == (NOW - timedelta(days=7), NOW)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        # 02:30 was skipped in Berlin on 2026-03-29: read as 01:30Z, as was 03:30, and the window was
        # refused as "from (…01:30+00:00) must be before to (…01:30+00:00)".
        (
            {"from": "2026-03-29T02:30", "to": "2026-03-29T03:30", "tz": "Europe/Berlin"},
            "from '2026-03-29T02:30' is no time on the clock in Europe/Berlin (skipped when daylight saving "
            "time began): give an offset (+01:00 or +02:00)",
        ),
        # Shown twice: silently the first (summer time), a window an hour off for the one who meant the second.
        (
            {"from": "2026-10-25T02:30", "to": "2026-10-26", "tz": "Europe/Berlin"},
            "from '2026-10-25T02:30' is shown twice on the clock in Europe/Berlin (daylight saving time "
            "ended): give its offset, +02:00 or +01:00",
        ),
        (
            {"from": "2026-11-01", "to": "2026-11-01T01:15", "tz": "America/New_York"},
            "to '2026-11-01T01:15' is shown twice on the clock in America/New_York",
        ),
        # The plain `to` is read as its day's end: the answer showed two equal instants.
        (
            {"from": "2026-11-23", "to": "2026-11-22"},
            "from '2026-11-23' must be before to '2026-11-22': the window is 2026-11-23T00:00:00+00:00 to "
            "2026-11-23T00:00:00+00:00 in UTC (to is exclusive; a plain date as to includes that day)",
        ),
        ({"from": "2026-12-09"}, "from '2026-12-09' must be before to (now, 2026-12-08T09:00:00+00:00)"),
        # Files of the zone database that are no IANA zone of a team.
        ({"tz": "localtime"}, "tz must be an IANA time zone"),  # the API host's own zone
        ({"tz": "right/Europe/Berlin"}, "tz must be an IANA time zone"),  # read an hour off by ZoneInfo
        ({"tz": "posix/Europe/Berlin"}, "tz must be an IANA time zone"),
        ({"tz": "Europe/Berlinn"}, "tz must be an IANA time zone such as Europe/Paris or America/New_York"),
        ({"tz": "europe/berlin"}, "tz must be an IANA time zone"),
    ],
)
def test_a_window_that_is_no_window_is_refused_saying_why(params: dict[str, str], reason: str) -> None:
    with pytest.raises(BadQuery) as refused:
        parse_query(params, NOW)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("params", "start"),
    [
        ({"from": "2026-10-25T02:30+01:00", "to": "2026-10-26", "tz": "Europe/Berlin"}, "2026-10-25T01:30:00+00:00"),
        ({"from": "2026-10-25T02:30+02:00", "to": "2026-10-26", "tz": "Europe/Berlin"}, "2026-10-25T00:30:00+00:00"),
        ({"from": "2026-10-25T03:30", "to": "2026-10-26", "tz": "Europe/Berlin"}, "2026-10-25T02:30:00+00:00"),
        ({"from": "2026-03-29T03:00", "to": "2026-03-30", "tz": "Europe/Berlin"}, "2026-03-29T01:00:00+00:00"),
        ({"from": "2026-11-01T00:00", "to": "2026-11-02", "tz": "Etc/GMT+5"}, "2026-11-01T05:00:00+00:00"),
    ],
)
def test_times_with_an_offset_or_on_the_clock_once_are_taken(params: dict[str, str], start: str) -> None:
    assert parse_query(params, NOW).start.isoformat() == start


def test_ten_years_by_day_are_the_days_with_conversations_only() -> None:
    events = opened_at(datetime(2017, 3, 1, 12, tzinfo=UTC), "old") + opened_at(
        datetime(2026, 11, 2, tzinfo=UTC), "new"
    )
    query = parse_query({"from": "2016-12-01", "to": "2026-11-30", "group_by": "day"}, NOW)
    body = service_report(fold_all(stored(events)), query, now=NOW, sla_seconds=SLA)
    assert [g["key"] for g in body["groups"]] == ["2017-03-01", "2026-11-02"]
    assert body["total"]["conversations"] == 2
