"""A projector whose claim's connection fails to close says so and counts it: the advisory lock
then lasts until PostgreSQL notices the session gone, and a standby waits that long."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from events.skips import SKIPPED
from services.projector_claim import RELEASE_SKIP, ProjectorClaim


class BrokenConnection:
    closed = False

    async def close(self) -> None:
        raise ConnectionResetError("server gone")


async def test_a_release_whose_close_fails_is_said_and_counted(log_lines: list[dict[str, Any]]) -> None:
    claim = ProjectorClaim("postgresql://db/relaydesk", "0/1")
    claim._conn = BrokenConnection()
    before = SKIPPED.labels(where=RELEASE_SKIP)._value.get()
    await claim.release()
    assert claim._conn is None
    assert SKIPPED.labels(where=RELEASE_SKIP)._value.get() == before + 1
    [said] = [line for line in log_lines if line.get("where") == RELEASE_SKIP]
    assert said["key"] == "0/1" and said["error"] == "ConnectionResetError"


async def test_a_file_claim_is_taken_once_and_released(tmp_path: Path) -> None:
    target = str(tmp_path / "timelines.db")
    first, second = ProjectorClaim(target, "0/1"), ProjectorClaim(target, "0/1")
    assert await first.take(asyncio.Event())
    assert not await second._try()  # the lock taken in a thread holds across them
    await first.release()
    assert await second._try()
    await second.release()
