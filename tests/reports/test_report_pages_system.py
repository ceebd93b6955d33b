"""Over a real nats-server: ``GET /v1/reports/service?group_by=conversation`` answers a page of
groups with ``count``, ``total_groups`` and ``next_cursor`` (it was every conversation of the
window in one answer: 54 MB at 100,000, found by a scale audit), and ``relaydesk report``
follows the cursor so it still prints and exports every conversation."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from services.bus.embedded import EmbeddedNats
from services.reports import command
from services.reports.command import report_command
from tests.integration.system import API_TOKEN, System, running_system, system_config
from tests.reports.synthetic import busy_day
from tests.reports.test_report_system import append_all

pytestmark = pytest.mark.integration


@pytest.fixture
async def api_with_a_day(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[tuple[System, str]]:
    events, day = busy_day(conversations=240)
    await append_all(clean_nats.url, events)
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats, services=("api",)) as s:
        yield s, day.date().isoformat()


async def test_conversation_groups_come_a_page_at_a_time(api_with_a_day: tuple[System, str]) -> None:
    api, day = api_with_a_day
    window = {"from": day, "to": day, "group_by": "conversation"}
    status, first = await api.get("/v1/reports/service", **window)
    assert status == 200, first
    assert (first["count"], first["total_groups"], len(first["groups"])) == (100, 240, 100)  # the default page
    assert first["total"]["conversations"] == 240 and len(first["by_hour"]) == 24
    assert first["next_cursor"]

    keys = [g["key"] for g in first["groups"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        status, page = await api.get("/v1/reports/service", **window, limit="60", cursor=cursor)
        assert status == 200, page
        assert page["count"] <= 60 and page["total_groups"] == 240
        assert page["total"] is None and page["by_hour"] is None  # on the first page only
        keys += [g["key"] for g in page["groups"]]
        cursor = page["next_cursor"]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 240

    # The other groupings stay whole (channels, agents, queues, days: bounded by the team).
    status, by_agent = await api.get("/v1/reports/service", **{**window, "group_by": "agent"})
    assert status == 200 and by_agent["count"] == by_agent["total_groups"] == 4 and by_agent["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"group_by": "conversation", "limit": "1001"}, "limit goes from 1 to 1000"),
        ({"group_by": "conversation", "limit": "0"}, "limit goes from 1 to 1000"),
        ({"group_by": "conversation", "cursor": "not-a-cursor"}, "cursor is not one this endpoint gave"),
        ({"cursor": "WyJjb252MSJd"}, "cursor pages the groups of a report"),
    ],
)
async def test_a_bad_limit_or_cursor_is_a_400(
    api_with_a_day: tuple[System, str], params: dict[str, str], reason: str
) -> None:
    api, _ = api_with_a_day
    status, body = await api.get("/v1/reports/service", **params)
    assert status == 400, body
    assert reason in body["error"]


async def test_relaydesk_report_follows_the_pages_and_says_how_far_off_a_terminal(
    api_with_a_day: tuple[System, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api, day = api_with_a_day
    monkeypatch.setattr(command, "PAGE_LIMIT", 50)  # five pages of 240 conversations
    monkeypatch.setattr("services.progress.PROGRESS_LINE_SECONDS", 0.0)  # a line after each page
    monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "json")
    console = Console(record=True, width=200)
    code = await asyncio.to_thread(
        report_command, api.config, start=day, end=day, group_by="conversation", as_json=True, console=console
    )
    assert code == 0
    body = msgspec.json.decode(console.export_text())
    keys = [g["key"] for g in body["groups"]]
    assert len(keys) == len(set(keys)) == body["count"] == body["total_groups"] == 240
    assert body["total"]["conversations"] == 240 and body["next_cursor"] is None
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    progress = [line for line in lines if line.get("event") == "report.progress"]
    assert progress and progress[-1]["groups"] == 240 and progress[-1]["total"] == 240

    # The table: a row per conversation.
    console = Console(record=True, width=250)
    code = await asyncio.to_thread(
        report_command, api.config, start=day, end=day, group_by="conversation", console=console
    )
    assert code == 0
    text = console.export_text()
    assert all(f"conv{n} " in text for n in (0, 99, 150, 239))


async def test_relaydesk_report_json_off_a_terminal_is_the_whole_report(api_with_a_day: tuple[System, str]) -> None:
    """`relaydesk report --json > file`: written as it is (rich's highlighting took 43 s over
    20,000 conversations), every conversation in it."""
    api, day = api_with_a_day
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "report", "--api", api.api, "--token", API_TOKEN,
        "--from", day, "--to", day, "--group-by", "conversation", "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(done.communicate(), 120)
    assert done.returncode == 0, err.decode()
    body = json.loads(out)
    assert body["total_groups"] == body["count"] == len(body["groups"]) == 240
