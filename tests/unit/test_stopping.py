"""Stopping background tasks for sure, and stepping past clean-up failures out loud."""

from __future__ import annotations

import asyncio

import structlog

from events.skips import SKIPPED, skipping
from events.stopping import cancel_all_and_wait, cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_stopped_all_the_same() -> None:
    # What Python 3.11's wait_for does when a message lands with the cancel: the loop around
    # nats-py's fetch() goes on as if nothing happened. One cancel() + await would hang here.
    swallowed = 0

    async def fetch_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(fetch_loop())
    await asyncio.sleep(0.05)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(cancel_and_wait(task, retry_every=0.05), 20)
    assert task.cancelled() and swallowed == 1
    assert [e["cancels"] for e in logs if e["event"] == "task.cancel_swallowed"] == [2]


async def test_stopping_tasks_keeps_their_errors_to_itself() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeper = asyncio.create_task(asyncio.sleep(60))
    await cancel_all_and_wait([failed, sleeper, failed])
    assert sleeper.cancelled() and isinstance(failed.exception(), RuntimeError)
    await cancel_and_wait(None)  # nothing to stop: no error


def test_a_skipped_clean_up_step_is_logged_and_counted_without_its_message() -> None:
    before = SKIPPED.labels(where="test.cleanup")._value.get()
    with structlog.testing.capture_logs() as logs, skipping("test.cleanup", nats_subject="rd.evt.c.cu_1"):
        raise ConnectionResetError("ava@example.com")
    assert SKIPPED.labels(where="test.cleanup")._value.get() == before + 1
    [line] = [e for e in logs if e["event"] == "skipped"]
    assert line["where"] == "test.cleanup" and line["error"] == "ConnectionResetError"
    assert line["nats_subject"] == "rd.evt.c.cu_1" and "ava@example.com" not in str(line)
