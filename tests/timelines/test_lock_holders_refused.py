"""A lock timeout's holders asked of a server that refuses the question: the timeout is still
said (no holders), and why the question failed is logged and counted, not dropped."""

from __future__ import annotations

import socket
from typing import Any

from events.skips import SKIPPED
from services.timelines.postgres_schema import HOLDERS_SKIP, lock_holders


async def test_holders_not_found_out_are_said_and_counted(log_lines: list[dict[str, Any]]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    before = SKIPPED.labels(where=HOLDERS_SKIP)._value.get()
    assert await lock_holders(f"postgresql://nobody@127.0.0.1:{port}/x", "relaydesk", connect_timeout=2) == ""
    assert SKIPPED.labels(where=HOLDERS_SKIP)._value.get() == before + 1
    [said] = [line for line in log_lines if line.get("where") == HOLDERS_SKIP]
    assert said["schema"] == "relaydesk" and said["error"] == "OperationalError"
