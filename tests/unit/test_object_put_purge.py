"""A snapshot save that fails and whose clean-up purge fails too: the write's error is raised,
and the chunks left in the bucket are said (stream, subject) and counted, not dropped silently."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js.errors import NotFoundError

from events.object_put import PURGE_SKIP, put_unless_replaced
from events.skips import SKIPPED


class FailingJs:
    """A JetStream context whose every publish and purge fails."""

    def __init__(self) -> None:
        self.purged: list[str] = []

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        raise NotFoundError

    async def publish(self, subject: str, payload: bytes, **_: Any) -> Any:
        raise ConnectionResetError("publish failed")

    async def purge_stream(self, stream: str, subject: str) -> None:
        self.purged.append(subject)
        raise ConnectionResetError("purge failed")


async def test_a_failed_purge_of_our_own_chunks_is_said_and_counted(log_lines: list[dict[str, Any]]) -> None:
    js = FailingJs()
    before = SKIPPED.labels(where=PURGE_SKIP)._value.get()
    with pytest.raises(ConnectionResetError, match="publish failed"):
        await put_unless_replaced(js, "rd_snapshots", "view", b"x" * 10)  # type: ignore[arg-type]
    assert SKIPPED.labels(where=PURGE_SKIP)._value.get() == before + 1
    [said] = [line for line in log_lines if line.get("where") == PURGE_SKIP]
    assert said["stream"] == "OBJ_rd_snapshots" and said["subject"] == js.purged[0]
    assert said["error"] == "ConnectionResetError"
