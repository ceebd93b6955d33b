"""Create the streams and KV buckets Relaydesk needs; safe to call on every start."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError, ServiceUnavailableError

from events import subjects
from events.parking import PARKED_BUCKET

DAY = 24 * 3600.0


@dataclass(frozen=True)
class StreamSettings:
    replicas: int = 1
    # Providers retry for hours (Meta up to 36 h): the inbound dedupe window must outlast that.
    inbound_dedupe_window: float = 48 * 3600.0
    inbound_max_age: float = 14 * DAY
    events_max_age: float = 0.0  # 0 keeps the log forever


def _stream_configs(s: StreamSettings) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.INBOUND_STREAM,
            subjects=[subjects.INBOUND_ALL],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            duplicate_window=s.inbound_dedupe_window,
            max_age=s.inbound_max_age,
        ),
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[subjects.EVENTS_ALL],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            discard=DiscardPolicy.NEW,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
            duplicate_window=120.0,
            max_age=s.events_max_age,
        ),
        StreamConfig(
            name=subjects.OUTBOUND_STREAM,
            subjects=[subjects.OUTBOUND_ALL],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=DAY,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: StreamSettings | None = None) -> None:
    """Create what is missing, update what drifted; never deletes anything."""
    s = settings or StreamSettings()
    for config in _stream_configs(s):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            # Some settings (storage, retention) cannot change in place; keep what runs.
            with contextlib.suppress(BadRequestError):
                await js.update_stream(config)
    for bucket, history, ttl in (
        (subjects.IDENTITY_BUCKET, 1, 0.0),
        (subjects.LEASE_BUCKET, 1, 0.0),
        (subjects.STATE_BUCKET, 1, 0.0),
        (PARKED_BUCKET, 1, 0.0),
    ):
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=history, ttl=ttl or None, replicas=s.replicas)
            )

    try:
        await js.object_store(subjects.SNAPSHOT_BUCKET)
    except (BucketNotFoundError, NotFoundError, ServiceUnavailableError):
        await js.create_object_store(
            subjects.SNAPSHOT_BUCKET, ObjectStoreConfig(bucket=subjects.SNAPSHOT_BUCKET, replicas=s.replicas)
        )


async def streams_exist(js: JetStreamContext) -> bool:
    try:
        for name in (subjects.INBOUND_STREAM, subjects.EVENTS_STREAM, subjects.OUTBOUND_STREAM):
            await js.stream_info(name)
    except Exception:
        return False
    return True
