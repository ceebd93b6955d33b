"""How long jobs show their progress (``relaydesk rebuild timelines``, ``customers import``,
``report`` paging through its groups, ``status --fold-all``).

A bar on stderr for a person at a terminal (rich, imported only then); off a terminal (a
Kubernetes Job's log, ``kubectl exec`` without -t) a line every ``PROGRESS_LINE_SECONDS``, in the
log format (``services.logs``): a JSON object (``"event": "rebuild.progress"``) where the logs are
JSON, as they are off a terminal by default, so a log pipeline parses it like every other line;
else plain text. Or nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from services import logs

# How progress is shown: True, a bar (a person at a terminal); "lines", a plain line every
# PROGRESS_LINE_SECONDS (a Kubernetes Job's log, `kubectl exec` without -t); False, nothing.
ShowProgress = bool | Literal["lines"]
PROGRESS_LINE_SECONDS = 10.0


def _rate_column() -> Any:
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.speed
            return Text("-- ev/s" if speed is None else f"{speed:,.0f} ev/s", style="progress.data.speed")

    return RateColumn()


class _Shown(Protocol):
    def update(self, completed: int) -> None: ...

    def done(self, total: int) -> None: ...


class _Nothing:
    def update(self, completed: int) -> None:
        pass

    def done(self, total: int) -> None:
        pass


class _Bar:
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def update(self, completed: int) -> None:
        self.bar.update(self.task, completed=completed)

    def done(self, total: int) -> None:
        self.bar.update(self.task, total=total, completed=total)


class ProgressLines:
    """Progress as a line on stderr every ``every`` seconds: off a terminal the bar was not
    shown at all, and a long rebuild in a Job said nothing until its end (found by an audit).
    ``unit``: what is counted (events, lines); ``event``: the JSON line's event name."""

    def __init__(
        self,
        description: str,
        total: int | None,
        every: float,
        *,
        unit: str = "events",
        event: str = "rebuild.progress",
    ) -> None:
        self.description, self.total, self.every = description, total, every
        self.unit, self.event = unit, event
        self.completed = 0
        self.started = self.last_at = time.monotonic()
        self.last = 0

    def update(self, completed: int) -> None:
        self.completed = completed

    def done(self, total: int) -> None:
        self.completed = total

    def line(self) -> str:
        """``rebuild timelines: 1,200,000 of 2,000,000 events (60%), 48,000 ev/s, 25s``: the rate
        since the last line (events: log sequences, as the bar counts them)."""
        now = time.monotonic()
        rate = (self.completed - self.last) / (now - self.last_at) if now > self.last_at else 0.0
        self.last, self.last_at = self.completed, now
        of = f" of {self.total:,}" if self.total else ""
        share = f" ({min(self.completed / self.total, 1):.0%})" if self.total else ""
        per_second = "ev/s" if self.unit == "events" else f"{self.unit}/s"
        return (
            f"{self.description}: {self.completed:,}{of} {self.unit}{share}, {rate:,.0f} {per_second},"
            f" {now - self.started:,.0f}s"
        )

    def record(self) -> dict[str, Any]:
        """The same as ``line`` for a JSON log: ``{"event": "rebuild.progress", "events": …}``."""
        now = time.monotonic()
        rate = (self.completed - self.last) / (now - self.last_at) if now > self.last_at else 0.0
        self.last, self.last_at = self.completed, now
        return {
            "event": self.event,
            "level": "info",
            "what": self.description,
            self.unit: self.completed,
            "total": self.total,
            "share": round(min(self.completed / self.total, 1), 3) if self.total else None,
            f"{self.unit}_per_second": round(rate),
            "seconds": round(now - self.started, 1),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    def say(self) -> None:
        """One line on stderr, in the log format."""
        text = json.dumps(self.record()) if logs.is_json() else self.line()
        print(text, file=sys.stderr, flush=True)

    def say_when_due(self) -> None:
        """A line when ``every`` seconds have passed since the last (or the start): for a job
        that waits in blocking calls rather than on an event loop (``relaydesk report``)."""
        if time.monotonic() - self.last_at >= self.every:
            self.say()

    async def say_every(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.say()


class BlockingProgress:
    """Progress of a job that waits in blocking calls rather than on an event loop
    (``relaydesk report`` following its pages): a bar on stderr at a terminal, else a line every
    ``PROGRESS_LINE_SECONDS`` when the job next reports how far it is (JSON where the logs are)."""

    def __init__(self, description: str, total: int, *, unit: str, event: str) -> None:
        self.bar: Any = None
        self.lines: ProgressLines | None = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(description, total=total)
            self.bar.start()
        else:
            self.lines = ProgressLines(description, total, PROGRESS_LINE_SECONDS, unit=unit, event=event)

    def update(self, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)
        elif self.lines is not None:
            self.lines.update(completed)
            self.lines.say_when_due()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class LineTasks:
    """What a rich ``Progress`` offers a long job (``add_task``, ``advance``), shown as a line
    every ``PROGRESS_LINE_SECONDS`` (JSON where the logs are, as ``event``) for a job off a
    terminal: a ``customers import`` of a million lines in a Job said nothing for an hour
    (found by an ops audit)."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.lines: ProgressLines | None = None
        self.ticker: asyncio.Task[None] | None = None

    def add_task(self, description: str, total: int | None = None) -> int:
        self.lines = ProgressLines(description, total, PROGRESS_LINE_SECONDS, unit="lines", event=self.event)
        self.ticker = asyncio.create_task(self.lines.say_every())
        return 0

    def advance(self, _task: int, advance: int = 1) -> None:
        if self.lines is not None:
            self.lines.completed += advance

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()


@asynccontextmanager
async def showing_progress(
    show: ShowProgress, description: str, total: int | None, *, event: str = "rebuild.progress"
) -> AsyncIterator[_Shown]:
    if show == "lines":
        lines = ProgressLines(description, total, PROGRESS_LINE_SECONDS, event=event)
        ticker = asyncio.create_task(lines.say_every())
        try:
            yield lines
        finally:
            ticker.cancel()
        return
    if not show:
        yield _Nothing()
        return
    # rich only when a person watches (it costs imports a scripted rebuild does without)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with bar:
        yield _Bar(bar, bar.add_task(description, total=total))
