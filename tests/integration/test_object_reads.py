"""A snapshot read never hangs: nats-py waits forever for the chunks of an object replaced
between its look at the metadata and its read (a router saving while a standby starts)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig

from events import objects
from events.objects import ObjectUnreadable, read_object

pytestmark = pytest.mark.integration


async def test_an_object_reads_back_and_a_missing_one_is_none(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    bucket = f"objs{uid}"
    obs = await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket))
    await obs.put("snap", b"x" * 300_000)
    assert await read_object(js, bucket, "snap") == b"x" * 300_000
    assert await read_object(js, bucket, "nothing") is None


async def test_an_object_whose_chunks_vanished_is_unreadable_not_a_hang(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objects, "BASE_TIMEOUT_S", 0.5)
    js = nc.jetstream()
    bucket = f"objs{uid}"
    obs = await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket))
    info = await obs.put("snap", b"y" * 10_000)
    # What a concurrent replace leaves a reader that already read the metadata: no chunks.
    await js.purge_stream(f"OBJ_{bucket}", subject=f"$O.{bucket}.C.{info.nuid}")
    with pytest.raises(ObjectUnreadable):
        await read_object(js, bucket, "snap", attempts=2)
