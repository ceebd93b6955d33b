"""Counting the KV gets made meanwhile (the services run in the test's process): a listing read
in one pass over its bucket makes none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from nats.js.kv import KeyValue


@contextmanager
def counting_kv_gets() -> Iterator[list[str]]:
    """The keys ``KeyValue.get`` was asked for inside the block."""
    asked: list[str] = []
    get = KeyValue.get

    async def counted(self: KeyValue, key: str, revision: int | None = None) -> KeyValue.Entry:
        asked.append(key)
        return await get(self, key, revision)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KeyValue, "get", counted)
        yield asked
