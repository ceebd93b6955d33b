"""`relaydesk report` pieces that need no server: the token, the parser, the chart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from events import subjects
from events.store import StoredEvent
from services.cli_parser import build_parser
from services.config import load
from services.reports import ReportQuery, fold_all, service_report
from services.reports.command import ReportError, operator_token
from services.reports.render import duration, percent, write_chart
from tests.reports.scenario import SLA
from tests.reports.synthetic import busy_day


def test_the_token_comes_from_the_flag_the_config_or_the_data_dir(tmp_path: Path) -> None:
    config = load(env={"RELAYDESK_DATA_DIR": str(tmp_path)})
    with pytest.raises(ReportError, match="no operator token"):
        operator_token(config, None)
    (tmp_path / "api-token").write_text("from-up\n")
    assert operator_token(config, None) == "from-up"
    assert operator_token(load(env={"RELAYDESK_API_TOKEN": "env"}), None) == "env"
    assert operator_token(config, "flag") == "flag"


def test_the_command_line() -> None:
    args = build_parser().parse_args(
        ["report", "--from", "2026-11-01", "--to", "2026-11-23", "--group-by", "agent", "--png", "r.png"]
    )
    assert (args.command, args.start, args.end, args.group_by, args.png) == (
        "report",
        "2026-11-01",
        "2026-11-23",
        "agent",
        "r.png",
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--group-by", "colour"])


def test_formats() -> None:
    assert [duration(v) for v in (None, 42.4, 725, 11_040)] == ["-", "42s", "12m05s", "3h04m"]
    assert [percent(v) for v in (None, 0.8123, 1.0)] == ["-", "81.2%", "100.0%"]
    # Rounded down: one breach in 2,500 is not "100%" (found by a team lead's audit).
    assert [percent(v) for v in (0.9996, 0.995, 0.6667)] == ["99.9%", "99.5%", "66.6%"]


def test_the_chart_is_a_png_even_for_an_empty_window(tmp_path: Path) -> None:
    events, day = busy_day(conversations=40)
    state = fold_all([StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)])
    for start in (day, day + timedelta(days=5)):  # a busy day, then a window with nothing in it
        query = ReportQuery(start=start, end=start + timedelta(days=1))
        report = service_report(state, query, now=day + timedelta(days=9), sla_seconds=SLA)
        out = write_chart(report, tmp_path / f"{start.date()}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_window_labels() -> None:
    from services.reports.render import window

    def label(start: str, end: str) -> str:
        return window({"from": start, "to": end})

    assert label("2026-11-23T00:00:00+00:00", "2026-11-24T00:00:00+00:00") == "2026-11-23"
    assert label("2026-11-01T00:00:00+00:00", "2026-11-24T00:00:00+00:00") == "2026-11-01 to 2026-11-23"
    assert label("2026-11-23T08:00:00+00:00", "2026-11-23T12:30:00+00:00") == "2026-11-23 08:00 to 2026-11-23 12:30"
