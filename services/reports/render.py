"""Showing a service report (the JSON of ``GET /v1/reports/service``): a rich table, a PNG.

The chart is drawn with matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

Report = dict[str, Any]


def duration(seconds: float | None) -> str:
    """42s, 12m05s, 3h04m; "-" when there is nothing to show."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def percent(rate: float | None) -> str:
    """One decimal, rounded down: one breach in 2,500 is 99.9%, never "100%" (found by an audit)."""
    return "-" if rate is None else f"{math.floor(rate * 1000 + 1e-9) / 10:.1f}%"


COLUMNS: tuple[tuple[str, str], ...] = (
    ("conv.", "conversations"),
    ("re-\nsolved", "resolved"),
    ("aban-\ndoned", "abandoned"),
    ("FRT", "first_response_seconds"),
    ("as-\nsign", "time_to_assign_seconds"),
    ("p90", "time_to_assign_seconds"),
    ("han-\ndle", "handle_seconds"),
    ("trans-\nfers", "transfers"),
    ("re-\nopen", "reopen_rate"),
    ("FCR", "fcr_rate"),
    ("SLA", "sla_attainment"),
    ("of-\nfers", "offers"),
    ("de-\nclined", "decline_rate"),
    ("ex-\npired", "expiry_rate"),
)


def _cells(row: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for header, key in COLUMNS:
        value = row[key]
        if isinstance(value, dict):
            out.append(duration(value["p90" if header == "p90" else "median"]))
        elif key.endswith("_rate") or key == "sla_attainment":
            out.append(percent(value))
        else:
            out.append(str(value))
    return out


def window(report: Report) -> str:
    """``2026-11-23``, ``2026-11-01 to 2026-11-23`` (whole days, inclusive) or
    ``2026-11-23 08:00 to 2026-11-23 12:00``, in the report's time zone (``zone_of``)."""
    start, end = datetime.fromisoformat(report["from"]), datetime.fromisoformat(report["to"])
    if start.time() == end.time() == time(0):
        last = (end - timedelta(days=1)).date()
        return f"{start.date()}" if last == start.date() else f"{start.date()} to {last}"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"


def zone_of(report: Report) -> str:
    """The time zone the report's days and hours are in (``tz``; UTC from an API before it)."""
    return str(report.get("tz") or "UTC")


def title(report: Report) -> str:
    by = f" by {report['group_by']}" if report.get("group_by") else ""
    return f"Service report{by}, {window(report)} ({zone_of(report)})"


def _table(
    report: Report,
    heading: str,
    caption: str,
    columns: tuple[tuple[str, str], ...],
    rows: list[tuple[str, list[str]]],
    total: list[str],
) -> Table:
    """The report's table layout: a group column, right-aligned ``columns``, ``rows`` (group
    key, cells), then the bold total."""
    t = Table(
        title=heading,
        caption=caption,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0),
        collapse_padding=True,
    )
    t.add_column(report.get("group_by") or "", style="bold", no_wrap=True)
    for header, _ in columns:
        t.add_column(header, justify="right", no_wrap=True)
    for key, cells in rows:
        t.add_row(key, *cells)
    t.add_row("total", *total, style="bold", end_section=True)
    return t


def table(report: Report) -> Table:
    return _table(
        report,
        title(report),
        "FRT: first response, assign: time to assign, handle: handle time (medians; p90 of time to "
        f"assign). Log sequence {report['as_of_seq']}.",
        COLUMNS,
        [(str(row["key"]), _cells(row)) for row in report["groups"]],
        _cells(report["total"]),
    )


VOICE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "calls"),
    ("an-\nswered", "answered"),
    ("in\nSLA", "service_level"),
    ("aban-\ndoned", "abandoned"),
    ("aban-\ndon %", "abandon_rate"),
    ("missed", "missed"),
    ("agent\nno ans.", "agent_no_answer"),
    ("voice-\nmail", "voicemails"),
    ("call-\nbacks", "callbacks_requested"),
    ("placed", "callbacks_placed"),
    ("AHT", "handle_seconds"),
)


def _voice_cells(voice: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for _, key in VOICE_COLUMNS:
        value = voice[key]
        if key == "handle_seconds":
            out.append(duration(value["mean"]))
        elif key in ("service_level", "abandon_rate"):
            out.append(percent(value))
        else:
            out.append(str(value))
    return out


def voice_table(report: Report) -> Table | None:
    """The calls of the report (None when it holds none): one row per group with calls."""
    total = report["total"].get("voice")
    if not total:
        return None
    return _table(
        report,
        f"Calls{' by ' + report['group_by'] if report.get('group_by') else ''}, {window(report)} ({zone_of(report)})",
        "in SLA: answered with the agent rung within the voice SLA, of all calls; AHT: mean handle time "
        "(ringing the agent who answered to the end of the call); placed: callbacks placed.",
        VOICE_COLUMNS,
        [(str(row["key"]), _voice_cells(row["voice"])) for row in report["groups"] if row.get("voice")],
        _voice_cells(total),
    )


def print_report(report: Report, console: Console | None = None) -> None:
    out = console or Console()
    out.print(table(report))
    calls = voice_table(report)
    if calls is not None:
        out.print(calls)


def write_chart(report: Report, path: str | Path) -> Path:
    """A PNG of SLA attainment (line, right axis) and median time to assign (bars, left axis)
    per hour of the day the conversations were routed (in the report's time zone), for its window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    hours = report["by_hour"]
    x = [h["hour"] for h in hours]
    # An hour with nobody assigned has no wait: no bar, not a bar of 0 s (found by an audit).
    waits = [math.nan if h["median_wait_seconds"] is None else h["median_wait_seconds"] for h in hours]
    attainment = [math.nan if h["sla_attainment"] is None else h["sla_attainment"] * 100 for h in hours]
    known = [w for w in waits if not math.isnan(w)]
    use_minutes = max(known, default=0.0) >= 180
    scale, unit = (60.0, "min") if use_minutes else (1.0, "s")

    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(x, [w / scale for w in waits], color="#7aa6c2", label=f"median time to assign ({unit})")
    for rect, h in zip(bars, hours, strict=True):
        if h["conversations"]:
            ax.annotate(
                str(h["conversations"]),
                (rect.get_x() + rect.get_width() / 2, 0.0 if math.isnan(rect.get_height()) else rect.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="#555555",
            )
    ax.set_xlabel(f"hour of day the conversation was routed ({zone_of(report)}); numbers: conversations")
    ax.set_ylabel(f"median time to assign ({unit})")
    ax.set_xticks(x, [f"{h:02d}" for h in x])
    ax.set_xlim(-0.6, 23.6)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(bottom=0, top=None if any(known) else 1)
    if not report["total"]["conversations"]:
        ax.text(0.5, 0.5, "no conversations in this window", transform=ax.transAxes, ha="center", color="#555555")

    ax2 = ax.twinx()
    (line,) = ax2.plot(x, attainment, color="#d1495b", marker="o", linewidth=2, label="SLA attainment")
    ax2.set_ylabel("SLA attainment")
    ax2.set_ylim(0, 105)
    ax2.yaxis.set_major_formatter(PercentFormatter())
    handles: list[Any] = [bars, line]
    overall = report["total"]["sla_attainment"]
    if overall is not None:
        ref = ax2.axhline(overall * 100, color="#d1495b", linestyle="--", linewidth=1, alpha=0.7)
        ref.set_label(f"overall SLA attainment {overall * 100:.1f}%")
        handles.append(ref)
    total = report["total"]
    ax.set_title(
        f"SLA attainment and waiting time per hour\n{window(report)} ({zone_of(report)}): "
        f"{total['conversations']} conversations, median wait "
        f"{duration(total['time_to_assign_seconds']['median'])}",
        fontsize=11,
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
