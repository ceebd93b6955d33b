"""Snapshots saved under one name by several processes at once (two API replicas save their view
and report snapshots at the same log positions) leave one object in the bucket, not one per
writer: nats-py's ``ObjectStore.put`` left the chunks of every writer but the last for good."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig

from events.objects import read_object, save_object

pytestmark = pytest.mark.integration

SIZE = 2_000_000  # 16 chunks: long enough to be under way in every writer at once
WRITERS = 3


@pytest.fixture
async def writers(nats_url: str) -> AsyncIterator[list[NATS]]:
    """One connection per writer, as processes have."""
    clients = [await nats.connect(nats_url) for _ in range(WRITERS)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def stored_bytes(nc: NATS, bucket: str) -> int:
    info = await nc.jetstream().stream_info(f"OBJ_{bucket}")
    return int(info.state.bytes or 0)


async def test_saves_at_once_leave_one_object_which_reads_back_whole(nc: NATS, writers: list[NATS], uid: str) -> None:
    js = nc.jetstream()
    bucket = f"snaps{uid}"
    await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket))
    try:
        # The first round on a name nobody saved yet, then rounds replacing it.
        for round_ in range(4):
            datas = [os.urandom(SIZE) for _ in writers]
            saved = await asyncio.gather(
                *(
                    save_object(w.jetstream(), bucket, "api", data, skip_as="test.snapshot_save", seq=round_)
                    for w, data in zip(writers, datas, strict=True)
                )
            )
            assert any(saved), "some writer's snapshot must stand"
            got = await read_object(js, bucket, "api")
            assert got is not None
            assert got in [d for d, ok in zip(datas, saved, strict=True) if ok], "the object is a winner's, whole"
            # One object's chunks (and its metadata), whatever the writers' interleaving.
            assert await stored_bytes(nc, bucket) < SIZE * 1.2, f"round {round_}: a loser's chunks were left"
        # A save on its own still replaces it.
        assert await save_object(js, bucket, "api", b"later", skip_as="test.snapshot_save", seq=9)
        assert await read_object(js, bucket, "api") == b"later"
        assert await stored_bytes(nc, bucket) < 10_000
    finally:
        await js.delete_object_store(bucket)
