"""What the kit watches while a connector runs: the event loop (a blocking call in ``deliver``
or ``parse`` stalls every webhook and reply of the process) and the log lines (no message text,
no address: the log is kept longer and read by more people than the messages). Started by
``running_harness``; the kit's tests read them through the ``Harness``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog

# A loop that has not run its heartbeat for this long (s) was blocked by a call that does not
# yield (requests, urllib, time.sleep, a sync SDK). Generous: a loaded CI machine stalls a loop
# for tens of milliseconds, never for a second; a sync call to the kit's fake provider (on the
# same loop, so unable to answer) blocks until that call's own timeout.
BLOCKED_AFTER = 1.0
_TICK = 0.05


@dataclass
class Blocked:
    seconds: float
    stack: str  # where the loop's thread was, innermost last


@dataclass
class LoopWatch:
    """A heartbeat on the loop and a thread that notes, with the loop thread's stack, each
    time the heartbeat stopped for ``BLOCKED_AFTER`` seconds."""

    blocked: list[Blocked] = field(default_factory=list)
    _beat: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(_TICK)

    def _watch(self, loop_thread: int) -> None:
        noted = -1.0  # the beat whose stall was reported: one report per stall
        while not self._stop.wait(_TICK):
            beat = self._beat
            stalled = time.monotonic() - beat
            if beat == noted:  # the stall already reported goes on
                self.blocked[-1].seconds = max(self.blocked[-1].seconds, stalled)
            elif stalled >= BLOCKED_AFTER:
                noted = beat
                frame = sys._current_frames().get(loop_thread)
                stack = _where(frame) if frame is not None else "(no stack)"
                self.blocked.append(Blocked(stalled, stack))

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        self._beat = time.monotonic()
        beat = asyncio.create_task(self._heartbeat())
        watcher = threading.Thread(target=self._watch, args=(threading.get_ident(),), daemon=True)
        watcher.start()
        try:
            yield self
        finally:
            self._stop.set()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            watcher.join(timeout=2)

    def report(self) -> str | None:
        """Why the loop counts as blocked (None: it never was)."""
        if not self.blocked:
            return None
        worst = max(self.blocked, key=lambda b: b.seconds)
        return (
            f"the event loop was blocked for {worst.seconds:.1f} s (a call that does not yield: requests, urllib,"
            " time.sleep, a sync SDK); every webhook and reply of the process waited. Use self.http (aiohttp),"
            f" or asyncio.to_thread for a library with no async API. The loop's thread was at:\n{worst.stack}"
        )


def _where(frame: FrameType) -> str:
    """The innermost frame of code outside Python and the installed packages (the connector's
    call), then the innermost frame of all (the call that blocked)."""
    frames = traceback.extract_stack(frame)
    library = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    own = [f for f in frames if not f.filename.startswith(library) and "site-packages" not in f.filename]
    chosen = [*own[-1:], *(frames[-1:] if not own or frames[-1] is not own[-1] else [])]
    return "".join(traceback.format_list(chosen))


class _Records(logging.Handler):
    def __init__(self, lines: list[MutableMapping[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"logger": record.name, "event": record.getMessage(), "level": record.levelname})


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog entry (debug included) and every stdlib ``logging`` record meanwhile."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        # format_exc_info: a logged exception kept as its traceback (text), for the kit's messages.
        with structlog.testing.capture_logs(processors=[structlog.processors.format_exc_info]) as lines:
            handler = _Records(lines)
            root.addHandler(handler)
            try:
                yield lines
            finally:
                root.removeHandler(handler)
    finally:
        root.setLevel(level)
        structlog.configure(**saved)


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return " ".join(_text(v) for v in value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__} {value}"
    return str(value)


# Shorter values (a chat id "42") would match timestamps and ports: only distinctive ones are looked for.
MIN_PRIVATE_CHARS = 6


def leaks(lines: Sequence[Mapping[str, Any]], private: Mapping[str, str]) -> list[str]:
    """``what: log line`` for each line holding one of ``private``'s values (what -> value)."""
    found: list[str] = []
    for line in lines:
        text = _text(line)
        for what, value in private.items():
            if len(value) >= MIN_PRIVATE_CHARS and value in text:
                found.append(f"{what} in {dict(line)!r}"[:400])
    return found
