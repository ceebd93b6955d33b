"""``relaydesk report``: ask the API for a service report, print it, optionally chart it.

The API is the one place figures are computed (it keeps the metrics projection folded from
the log), so the command works from any machine that can reach it, with the operator token.
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
from services.reports.render import print_report, write_chart


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
        body = fetch_report(api or f"http://{config.api.host}:{config.api.port}", operator_token(config, token), params)
    except ReportError as err:
        return _failed(str(err))
    if as_json:
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
