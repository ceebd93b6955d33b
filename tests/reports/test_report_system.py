"""Over a real nats-server: events appended with EventStore, folded by the API's metrics
projection, served by GET /v1/reports/service, and shown by `relaydesk report --png`."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from rich.console import Console

from events import subjects
from events.model import LogEvent
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.reports import ReportQuery, fold_all, service_report
from services.reports.command import report_command
from tests.integration.system import API_TOKEN, System, running_system, system_config
from tests.reports.scenario import SLA, T0, Conv, scenario
from tests.reports.synthetic import busy_day

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def append_all(url: str, events: list[LogEvent]) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream())
        store = EventStore(nc, nc.jetstream())
        for event in events:  # one at a time, in order: the log is the order
            assert await store.append(Append(event)) > 0
    finally:
        await nc.close()


@pytest.fixture
async def api_only(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[System]:
    """The API alone (no router: the appended log is the whole story)."""
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats, services=("api",)) as s:
        yield s


def expected(events: list[LogEvent], group_by: str | None, start: str, end: str) -> dict[str, Any]:
    from services.reports.projection import parse_query

    log = [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]
    query: ReportQuery = parse_query({"from": start, "to": end, **({"group_by": group_by} if group_by else {})}, T0)
    return service_report(fold_all(log), query, now=T0 + timedelta(days=30), sla_seconds=SLA)


def figures_only(body: dict[str, Any]) -> dict[str, Any]:
    return {"total": body["total"], "groups": body["groups"], "by_hour": body["by_hour"]}


async def test_the_api_serves_the_figures_of_the_log(api_only: System) -> None:
    events = scenario()
    await append_all(api_only.nats.url, events)
    status, body = await api_only.get("/v1/reports/service", **{"from": "2026-11-23", "to": "2026-11-23"})
    assert status == 200, body
    total = body["total"]
    assert total["conversations"] == 4
    assert total["time_to_assign_seconds"] == {"count": 3, "mean": 73.333, "median": 100.0, "p90": 100.0}
    assert total["first_response_seconds"]["median"] == 120.0
    assert total["handle_seconds"]["mean"] == 926.667
    assert (total["sla_attainment"], total["reopen_rate"], total["fcr_rate"]) == (0.5, 0.3333, 0.3333)
    assert (total["decline_rate"], total["expiry_rate"]) == (0.25, 0.25)
    assert body["as_of_seq"] >= len(events)
    assert (body["from"], body["to"]) == ("2026-11-23T00:00:00+00:00", "2026-11-24T00:00:00+00:00")

    for group_by in ("channel", "agent", "queue", "day", "conversation"):
        status, body = await api_only.get(
            "/v1/reports/service", **{"from": "2026-11-23", "to": "2026-11-23", "group_by": group_by}
        )
        assert status == 200, body
        assert figures_only(body) == figures_only(expected(events, group_by, "2026-11-23", "2026-11-23"))

    # The team's own time zone: the bounds are its midnights, the groups its days.
    status, body = await api_only.get(
        "/v1/reports/service", **{"from": "2026-11-23", "to": "2026-11-23", "group_by": "day", "tz": "Asia/Tokyo"}
    )
    assert status == 200, body
    assert (body["from"], body["to"], body["tz"]) == (
        "2026-11-23T00:00:00+09:00",
        "2026-11-24T00:00:00+09:00",
        "Asia/Tokyo",
    )
    assert [g["key"] for g in body["groups"]] == ["2026-11-23"]  # 10:00-12:00 UTC is the evening in Tokyo

    # What the log gains later shows in the next report (the projection folds the new events).
    more = Conv("c9", "E", "chat").open(9000).offer(9001, "dana").decline(9002, "dana").events
    await append_all(api_only.nats.url, more)
    status, body = await api_only.get("/v1/reports/service", **{"from": "2026-11-23", "to": "2026-11-24"})
    assert status == 200, body
    assert (body["total"]["conversations"], body["total"]["offers_declined"]) == (5, 2)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from": "yesterday"}, "from must be an ISO date"),
        ({"to": "2026-13-01"}, "to must be an ISO date"),
        ({"from": "2026-11-23", "to": "2026-11-22"}, "must be before"),
        ({"group_by": "colour"}, "group_by must be one of channel, agent, queue, tier, day, conversation"),
        ({"reopen_hours": "soon"}, "reopen_hours must be a number"),
        ({"reopen_hours": "-1"}, "reopen_hours goes from 0"),
        ({"groupby": "agent"}, "unknown parameter(s) groupby"),
        ({"tz": "CET-1CEST"}, "tz must be an IANA time zone such as Europe/Paris"),
        ({"to": "9999-12-31"}, "to '9999-12-31' is out of range"),  # was a 500 (found by an audit)
        ({"to": "0001-01-03"}, "to '0001-01-03' is out of range: give from as well"),
    ],
)
async def test_bad_parameters_get_a_clear_400(api_only: System, params: dict[str, str], reason: str) -> None:
    status, body = await api_only.get("/v1/reports/service", **params)
    assert status == 400
    assert reason in body["error"]


async def test_reports_need_the_operator_token(api_only: System) -> None:
    async with api_only.http.get(api_only.api + "/v1/reports/service") as r:
        assert r.status == 401


async def test_relaydesk_report_prints_a_table_and_writes_a_png(
    api_only: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, day = busy_day()
    await append_all(api_only.nats.url, events)
    png = tmp_path / "report.png"
    console = Console(record=True, width=200)
    code = await asyncio.to_thread(
        report_command,
        api_only.config,
        start=day.date().isoformat(),
        end=day.date().isoformat(),
        group_by="channel",
        png=str(png),
        console=console,
    )
    assert code == 0
    text = console.export_text()
    assert "Service report by channel, 2026-11-20 (UTC)" in text
    assert all(channel in text for channel in ("sms", "chat", "email", "social", "total"))
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert 10_000 < png.stat().st_size < 300_000
    if sample := os.environ.get("RELAYDESK_SAMPLE_REPORT_PNG"):
        shutil.copyfile(png, sample)

    # The same figures as JSON, and a clear message for a bad window or a wrong token.
    console = Console(record=True, width=200)
    code = await asyncio.to_thread(
        report_command, api_only.config, start="2026-11-20", end="2026-11-20", as_json=True, console=console
    )
    assert code == 0
    assert msgspec.json.decode(console.export_text())["total"]["conversations"] == 240
    # Failures on stderr, nothing on stdout (`--json > file` gets no error text).
    console = Console(record=True, width=200)
    capsys.readouterr()
    code = await asyncio.to_thread(
        report_command, api_only.config, start="2026-11-21", end="2026-11-20", console=console
    )
    assert code == 2
    assert "refused the report (400)" in capsys.readouterr().err
    code = await asyncio.to_thread(report_command, api_only.config, token="wrong", console=console)
    assert code == 2 and "(401)" in capsys.readouterr().err
    assert console.export_text() == ""


async def test_relaydesk_report_says_when_the_api_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.config import load

    config = load(env={"RELAYDESK_API_PORT": "1", "RELAYDESK_API_TOKEN": API_TOKEN})
    console = Console(record=True, width=200)
    assert await asyncio.to_thread(report_command, config, console=console) == 2
    assert "cannot reach the API at http://127.0.0.1:1" in capsys.readouterr().err
    assert console.export_text() == ""


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--api", "127.0.0.1:8080"], "--api must be an http:// or https:// URL"),
        (["--api", "ftp://h/"], "--api must be an http:// or https:// URL"),
        (["--png", "{tmp}"], "argument --png: {tmp} is a directory: name a file in it"),
    ],
)
async def test_relaydesk_report_wrong_arguments_are_one_line(
    api_only: System, tmp_path: Path, argv: list[str], said: str
) -> None:
    """An operator's --api without its scheme or a --png that is a directory ended in a Python
    traceback (urllib's "unknown url type", PIL's IsADirectoryError); now one line saying what
    was wrong, exit 2 (a --png refused as the command line is parsed: after argparse's usage)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    if "--api" not in argv:
        argv += ["--api", api_only.api]
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "report", "--token", API_TOKEN, *argv,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_bytes = await asyncio.wait_for(done.communicate(), 120)
    err = err_bytes.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err, err
    *usage, last = err.rstrip("\n").split("\n")
    assert last.startswith("relaydesk report: ") and said.format(tmp=tmp_path) in last, err
    assert all(line.startswith(("usage:", " ")) for line in usage), err


async def test_a_fresh_api_folds_the_same_log_into_the_same_figures(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    events, day = busy_day(conversations=120)
    await append_all(clean_nats.url, events)
    params = {"from": day.date().isoformat(), "to": day.date().isoformat(), "group_by": "agent"}
    answers = []
    for run in range(2):  # two API processes in turn, each folding the log from the start
        config = system_config(tmp_path / f"run{run}", clean_nats.url)
        async with running_system(config, clean_nats, services=("api",)) as system:
            status, body = await system.get("/v1/reports/service", **params)
            assert status == 200, body
            answers.append(figures_only(body))
    assert answers[0] == answers[1]
    assert answers[0]["total"]["conversations"] == 120


async def test_a_real_conversation_through_every_service_shows_in_the_report(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """SMS in, offered by the router, accepted, answered and resolved through the API."""
    from datetime import UTC, datetime

    from tests.integration.system import accept_if_offered, eventually

    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats) as system:
        phone = "+15551239901"
        assert await system.send_sms("SM" + "e" * 32, phone, "my invoice is wrong") == 200
        customer_id = await eventually(lambda: system.customer(phone))
        conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
        status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", {"text": "Let me check."})
        assert status == 202, body

        async def resolved() -> bool:
            # 409 while the connector appends the delivery outcome. A resolution that was
            # written may answer 404 (the API builds its answer from the live view, which drops
            # resolved conversations): the report below checks it was resolved once.
            status, body = await system.post(f"/v1/conversations/{conv['id']}/resolve", {})
            assert status in (200, 404, 409), body
            return status != 409

        await eventually(resolved)
        today = datetime.now(UTC).date().isoformat()
        status, report = await system.get("/v1/reports/service", **{"from": today, "to": today, "group_by": "agent"})
        assert status == 200, report
        total = report["total"]
        assert (total["conversations"], total["assigned"], total["responded"], total["resolved"]) == (1, 1, 1, 1)
        assert (total["sla_met"], total["fcr_rate"], total["transfers"]) == (1, 1.0, 0)
        assert total["offers"] == total["offers_accepted"] == 1
        assert 0 <= total["time_to_assign_seconds"]["mean"] < 60
        assert total["first_response_seconds"]["mean"] >= total["time_to_assign_seconds"]["mean"] - 1
        assert [g["key"] for g in report["groups"]] == [conv["agent_id"]]
        assert report["sla_seconds"]["sms"] == 300.0


async def test_the_relaydesk_command_end_to_end(api_only: System, tmp_path: Path) -> None:
    """The installed command line, as a user runs it."""
    import sys

    await append_all(api_only.nats.url, scenario())
    png = tmp_path / "cli.png"
    argv = ["report", "--api", api_only.api, "--from", "2026-11-23", "--to", "2026-11-23", "--group-by", "queue"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        "--png",
        str(png),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RELAYDESK_API_TOKEN": API_TOKEN, "COLUMNS": "160"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "Service report by queue, 2026-11-23 (UTC)" in text
    assert "sms:billing" in text and "chart written to" in text
    assert png.read_bytes().startswith(PNG_MAGIC)


async def test_a_snapshot_lets_a_new_projection_fold_only_the_log_after_it(clean_nats: EmbeddedNats) -> None:
    from services.reports import ReportProjection

    first, later = scenario(prefix="s1-"), scenario(prefix="s2-")
    await append_all(clean_nats.url, first)
    nc = await nats.connect(clean_nats.url)
    try:
        store = EventStore(nc, nc.jetstream())
        one = ReportProjection(store, snapshot_every=10)
        await one.catch_up()
        assert one._saving is not None
        await one._saving
        await append_all(clean_nats.url, later)
        two = ReportProjection(store, snapshot_every=0)  # reads snapshots, writes none
        assert await two.catch_up() == len(first) + len(later)
        assert two.snapshot_loaded
        everything = fold_all(await store.read(subjects.CUSTOMER_EVENTS_ALL))
        assert msgspec.json.encode(two.state) == msgspec.json.encode(everything)
    finally:
        await nc.close()
