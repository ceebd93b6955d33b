"""Running a one-shot tool (``rebuild``, ``customers``, ``setup``, ``dlq``, ``status``, ``report``)
so that Ctrl-C or SIGTERM stops it in one line saying what it left, and exits 130 / 143."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from services.bus.waiting import a_person_waits

T = TypeVar("T")


def run_tool(job: Coroutine[Any, Any, T], *, interrupted: str) -> T:
    """Run a one-shot tool's coroutine. Ctrl-C or SIGTERM cancels it, as ``_run_service`` stops a
    service that is starting: its cleanups run (NATS drained, a rebuild's writer process killed),
    then one line, ``relaydesk: interrupted; <interrupted>`` (what the tool left: say it true),
    and exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports them; no traceback (found by an
    audit: ~40 lines of CancelledError, and SIGTERM ended it with nothing said). A job that gets
    to its end all the same (a rebuild finishes a swap it began) returns as usual."""
    received: list[int] = []
    finished: list[T] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        pending: list[threading.Timer] = []

        def cancel() -> None:
            for nudge in pending:
                nudge.cancel()
            pending.clear()
            me.cancel()

        def on_signal(signum: int, _frame: Any) -> None:
            received.append(signum)
            if pending:
                # The loop has not run since the last signal: something blocks it (a prompt
                # waiting for a line), which a cancellation never reaches. Stop there.
                raise KeyboardInterrupt
            loop.call_soon_threadsafe(cancel)
            # Still blocked a moment later: the signal again, to the main thread, interrupts
            # the blocking call (so one Ctrl-C ends `customers erase`'s confirmation prompt).
            nudge = threading.Timer(BLOCKED_LOOP_SECONDS, _interrupt_main, (pending,))
            nudge.daemon = True
            pending.append(nudge)
            nudge.start()

        # signal.signal, not loop.add_signal_handler (as _run_service): the loop's handler runs
        # only once the loop runs again, so a second Ctrl-C could not break a blocked prompt.
        signals = (signal.SIGINT, signal.SIGTERM) if _main_thread() else ()
        before = {sig: signal.signal(sig, on_signal) for sig in signals}
        try:
            finished.append(await job)
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
        return finished[0]

    with interrupted_as(interrupted, received):
        try:
            return asyncio.run(main())
        except (asyncio.CancelledError, KeyboardInterrupt):
            if finished:
                return finished[0]
            if not received:
                raise  # not cancelled by a signal of ours (a KeyboardInterrupt is said as one)
            raise KeyboardInterrupt from None  # said by interrupted_as


def say_failure(tool: str, code: str, message: str, *, as_json: bool) -> None:
    """A one-shot tool's failure: one line on stderr for a person (``relaydesk <tool>: <message>``)
    and, with ``--json``, one JSON object on stdout, ``{"error": {"code": ..., "message": ...}}``,
    so a script reading stdout into jq reads why instead of nothing (found by an ops audit:
    ``dlq list --json | jq`` got empty input when NATS was away). The caller's exit code says it
    failed either way; ``code`` is a stable word (``nats_unreachable``, ``not_found``, …)."""
    print(f"relaydesk {tool}: {message}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False), flush=True)


# How long a signal's cancellation may wait for the event loop before the loop is taken as
# blocked (a prompt) and the main thread is interrupted where it waits.
BLOCKED_LOOP_SECONDS = 0.5


def _interrupt_main(pending: list[threading.Timer]) -> None:
    if pending and threading.main_thread().ident is not None:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def _main_thread() -> bool:
    """Signal handlers are set in the main thread only (a test runs the CLI in another)."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupted_as(note: str, received: list[int] | None = None) -> Iterator[None]:
    """A one-shot tool stopped by Ctrl-C or SIGTERM: ``relaydesk: interrupted; <note>`` and exit
    128 + the signal. SIGTERM is taken as Ctrl-C, so a tool that runs ``asyncio.run`` itself
    (dlq, status) gets asyncio's own handling of it: the main task cancelled, its cleanups run,
    a second signal stops at once. ``received``: the signals ``run_tool`` saw."""
    seen: list[int] = [] if received is None else received

    def on_sigterm(signum: int, frame: Any) -> None:
        seen.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):  # asyncio.run's (cancel its main task), else the default (raise)
            handler(signal.SIGINT, frame)
        else:  # Ctrl-C ignored (started in the background): stop all the same
            raise KeyboardInterrupt

    on_sigterm.relaydesk = True  # type: ignore[attr-defined]
    before = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    # Not over a handler someone else chose (SIGTERM ignored, a test's); over ours (nested) yes.
    ours = before == signal.SIG_DFL or getattr(before, "relaydesk", False)
    if ours:
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with a_person_waits():  # a NATS that does not answer is said on stderr, not left silent
            yield
    except KeyboardInterrupt:
        print(f"relaydesk: interrupted; {note}", file=sys.stderr)
        raise SystemExit(128 + (seen[0] if seen else signal.SIGINT)) from None
    finally:
        if ours:
            signal.signal(signal.SIGTERM, before)
