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
from events.personal.keys import KEYS_ALL, KEYS_STREAM

DAY = 24 * 3600.0
# The API's Idempotency-Key records (services.api.idempotency), kept a day.
IDEMPOTENCY_BUCKET = "rd_idempotency"


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
            # Intake reads the window other intake processes hold with batched direct gets
            # (services/intake/ordering.py): one sender's messages stay in order.
            allow_direct=True,
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
        # Per-customer data keys (events.personal): one message per subject, deletable, so
        # that destroying a key (a secure erase) shreds the customer's personal data.
        StreamConfig(
            name=KEYS_STREAM,
            subjects=[KEYS_ALL],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            max_msgs_per_subject=1,
            allow_direct=True,
            deny_delete=False,
            deny_purge=True,
        ),
    ]


class StreamsMissing(RuntimeError):
    """Streams or buckets are missing and this connection may not create them (its NATS role
    only checks): the reason names them and says how to create them."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"NATS has no {', '.join(missing)}, and this service's NATS role may not create streams: "
            "run `relaydesk up` or `relaydesk setup` with the tool role first"
        )


async def ensure_streams(js: JetStreamContext, settings: StreamSettings | None = None, *, create: bool = True) -> None:
    """Create what is missing, update what drifted; never deletes anything. With ``create``
    false (a NATS role that may not manage streams) only check that everything exists, and
    raise ``StreamsMissing`` naming what does not: no permission error is hidden behind a
    request that times out."""
    s = settings or StreamSettings()
    if not create:
        await _check_streams(js, s)
        return
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
        (IDEMPOTENCY_BUCKET, 1, DAY),
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


_BUCKETS = (subjects.IDENTITY_BUCKET, subjects.LEASE_BUCKET, subjects.STATE_BUCKET, PARKED_BUCKET, IDEMPOTENCY_BUCKET)


async def _check_streams(js: JetStreamContext, s: StreamSettings) -> None:
    names = [c.name for c in _stream_configs(s) if c.name is not None]
    names += [f"KV_{bucket}" for bucket in _BUCKETS] + [f"OBJ_{subjects.SNAPSHOT_BUCKET}"]
    missing: list[str] = []
    for name in names:
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(name)
    if missing:
        raise StreamsMissing(missing)


async def streams_exist(js: JetStreamContext) -> bool:
    try:
        for name in (subjects.INBOUND_STREAM, subjects.EVENTS_STREAM, subjects.OUTBOUND_STREAM):
            await js.stream_info(name)
    except Exception:
        return False
    return True
