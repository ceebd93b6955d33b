"""``relaydesk report``: ask the API for a service report, print it, optionally chart it.

The API is the one place figures are computed (it keeps the metrics projection folded from
the log), so the command works from any machine that can reach it, with the operator token.
A grouped report comes a page of groups at a time (``GET /v1/reports/service`` answers at most
1000 groups: 100,000 conversations were one answer of 54 MB); the command follows
``next_cursor`` with the first page's window and prints every group, with a progress bar at a
terminal and a line every 10 s off one (``services.progress``).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from services.config import Config
from services.progress import BlockingProgress
from services.reports.render import print_report, write_chart

PAGE_LIMIT = 1000
"""Groups asked for a page (the API's most)."""


class ReportError(Exception):
    pass


def operator_token(config: Config, explicit: str | None) -> str:
    """--token, else ``[api] token`` / RELAYDESK_API_TOKEN, else the one ``relaydesk up``
    generated in the data dir."""
    if explicit:
        return explicit
    if config.api.token:
        return config.api.token
    path = config.data_dir / "api-token"
    if path.exists():
        return path.read_text().strip()
    raise ReportError(f"no operator token: pass --token, set RELAYDESK_API_TOKEN, or run where {path} exists")


def fetch_report(api: str, token: str, params: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # urllib raised a bare ValueError ("unknown url type"): a traceback for a typo.
        raise ReportError(f"--api must be an http:// or https:// URL, e.g. http://127.0.0.1:8080, not {api!r}")
    url = api.rstrip("/") + "/v1/reports/service"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: dict[str, Any] = json.loads(answer.read())
            return body
    except urllib.error.HTTPError as err:
        try:
            reason = json.loads(err.read()).get("error", err.reason)
        except ValueError:
            reason = err.reason
        raise ReportError(f"the API refused the report ({err.code}): {reason}") from err
    except (urllib.error.URLError, OSError) as err:
        why = getattr(err, "reason", err)
        raise ReportError(
            f"cannot reach the API at {api} ({why}); is `relaydesk up` (or `relaydesk api`) running?"
        ) from err


def fetch_all_groups(
    api: str, token: str, params: dict[str, str], *, limit: int | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """The report with every group: the first page (totals, hourly series), then each next
    page of groups for the same window (the first page's ``from`` and ``to``: a window ending
    "now" would move between pages)."""
    if not params.get("group_by"):
        return fetch_report(api, token, params, timeout)
    limit = limit or PAGE_LIMIT
    first = fetch_report(api, token, {**params, "limit": str(limit)}, timeout)
    groups: list[dict[str, Any]] = list(first["groups"])
    cursor = first.get("next_cursor")
    if cursor is None:
        return first
    pinned = {**params, "from": first["from"], "to": first["to"], "limit": str(limit)}
    total = int(first.get("total_groups") or 0)
    progress = BlockingProgress("report groups", total, unit="groups", event="report.progress")
    try:
        while cursor is not None:
            progress.update(len(groups))
            try:
                page = fetch_report(api, token, {**pinned, "cursor": cursor}, timeout)
            except ReportError as err:
                raise ReportError(f"{err} (after {len(groups)} of {first.get('total_groups')} groups)") from err
            groups.extend(page["groups"])
            cursor = page.get("next_cursor")
        progress.update(len(groups))
    finally:
        progress.stop()
    return {**first, "groups": groups, "count": len(groups), "next_cursor": None}


def report_command(
    config: Config,
    *,
    start: str | None = None,
    end: str | None = None,
    group_by: str | None = None,
    reopen_hours: float | None = None,
    tz: str | None = None,
    png: str | None = None,
    as_json: bool = False,
    api: str | None = None,
    token: str | None = None,
    console: Console | None = None,
) -> int:
    """The report on stdout (``console``); a failure is one line on stderr and exit 2, so
    ``relaydesk report --json > report.json`` never leaves an error message in the file."""
    # Off a terminal, --json is written as it is: rich's print_json took 43 s over the 22 MB of
    # 20,000 conversations (a person at a terminal gets it highlighted).
    plain_json = console is None and not sys.stdout.isatty()
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    params = {
        key: str(value)
        for key, value in (
            ("from", start),
            ("to", end),
            ("group_by", group_by),
            ("reopen_hours", reopen_hours),
            ("tz", tz),
        )
        if value is not None
    }
    try:
        body = fetch_all_groups(
            api or f"http://{config.api.host}:{config.api.port}", operator_token(config, token), params
        )
    except ReportError as err:
        return _failed(str(err))
    if as_json and plain_json:
        sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif as_json:
        console.print_json(data=body)
    else:
        print_report(body, console)
    if png:
        try:
            written = write_chart(body, Path(png))
        except OSError as err:  # a directory, no permission, a read-only file system
            return _failed(f"cannot write the chart to {png}: {err.strerror or err}")
        console.print(f"chart written to {written}")
    return 0


def _failed(reason: str) -> int:
    """One plain line on stderr (not through rich: a reason's ``[api] port`` is no markup)."""
    print(f"relaydesk report: {reason}", file=sys.stderr, flush=True)
    return 2
