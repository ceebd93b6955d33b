"""Every stream, KV bucket and object store Relaydesk uses, with its wanted config (the
registry, ``stores``), and their set-up: ``ensure_streams`` creates what is missing, brings
what drifted in line (``streams.updated``) and reports what NATS refuses to change; safe to
call on every start. Stores created lazily by one service (the chat history, delivery records,
email attachments) take their config from here too, and the same mechanics
(``events.stream_setup``: ``patiently``, ``ensure_store``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from events import subjects
from events.parking import PARKED_BUCKET
from events.personal.keys import KEYS_ALL, KEYS_STREAM
from events.stream_setup import (
    SETUP_BUDGET_S,
    TRANSIENT,
    Outcome,
    SetupFailed,
    ensure_store,
    patiently,
)
from events.stream_specs import Drift, DriftRefused, StoreSpec, kv_spec, objects_spec, stream_spec

__all__ = [
    "SETUP_BUDGET_S",
    "Drift",
    "DriftRefused",
    "SetupFailed",
    "StoreSpec",
    "StreamSettings",
    "StreamsMissing",
    "ensure_store",
    "ensure_streams",
    "patiently",
    "stores",
    "stream_drift",
]

log = structlog.get_logger(__name__)

DAY = 24 * 3600.0
# The API's Idempotency-Key records (services.api.idempotency), kept a day.
IDEMPOTENCY_BUCKET = "rd_idempotency"
# Delivery records (services.delivery.records), created by the delivery service.
DELIVERIES_BUCKET = "rd_deliveries"
DELIVERY_RECORD_TTL = 14 * DAY  # records vanish two weeks after their last change
# Email attachments (connectors.email, ``attachment_bucket``), created by the email connector.
ATTACHMENTS_BUCKET = "rd_attachments"
# Canned replies kept by the API beside the config file's (services.api.canned_store): one
# document, its last versions kept; created by the API when missing.
CANNED_BUCKET = "rd_canned_replies"
CANNED_HISTORY = 10
# The web chat's catch-up history (connectors.chat.history, ``history_stream``), created by
# the chat connector from its own settings; setup only keeps its replicas in line.
CHAT_STREAM = "RD_CHAT"


@dataclass(frozen=True)
class StreamSettings:
    replicas: int = 1
    # Providers retry for hours (Meta up to 36 h): the inbound dedupe window must outlast that.
    inbound_dedupe_window: float = 48 * 3600.0
    inbound_max_age: float = 14 * DAY
    events_max_age: float = 0.0  # 0 keeps the log forever
    # Files of messages (mail attachments, agents' uploads): 0 keeps them; with [retention]
    # message_days, as long as the text of the messages they came with.
    attachments_max_age: float = 0.0


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


def deliveries_bucket(replicas: int) -> KeyValueConfig:
    return KeyValueConfig(bucket=DELIVERIES_BUCKET, history=1, ttl=DELIVERY_RECORD_TTL, replicas=replicas)


def canned_bucket(replicas: int) -> KeyValueConfig:
    return KeyValueConfig(bucket=CANNED_BUCKET, history=CANNED_HISTORY, replicas=replicas)


def attachments_store(replicas: int, bucket: str = ATTACHMENTS_BUCKET, *, max_age: float = 0.0) -> ObjectStoreConfig:
    """The files of messages; ``max_age`` > 0: each kept that many seconds (``retention_max_age``)."""
    return ObjectStoreConfig(bucket=bucket, replicas=replicas, ttl=max_age or None)


def retention_max_age(message_days: int) -> float:
    """How long a message's files are kept under ``[retention] message_days`` (s; 0: for ever):
    its UTC day and ``message_days`` more, as its text (``services.retention``)."""
    return (message_days + 1) * DAY if message_days > 0 else 0.0


def stores(s: StreamSettings | None = None) -> list[StoreSpec]:
    """Every stream, KV bucket and object store Relaydesk uses, with its wanted config."""
    s = s or StreamSettings()
    out = [stream_spec(config) for config in _stream_configs(s)]
    for bucket, history, ttl in (
        (subjects.IDENTITY_BUCKET, 1, 0.0),
        (subjects.LEASE_BUCKET, 1, 0.0),
        (subjects.STATE_BUCKET, 1, 0.0),
        (PARKED_BUCKET, 1, 0.0),
        (IDEMPOTENCY_BUCKET, 1, DAY),
    ):
        out.append(kv_spec(KeyValueConfig(bucket=bucket, history=history, ttl=ttl or None, replicas=s.replicas)))
    out.append(objects_spec(ObjectStoreConfig(bucket=subjects.SNAPSHOT_BUCKET, replicas=s.replicas)))
    # Created lazily by their service (from the replicas it is given); setup keeps them in line.
    out.append(kv_spec(deliveries_bucket(s.replicas), owner="delivery", required=False))
    out.append(kv_spec(canned_bucket(s.replicas), owner="api", required=False))
    attachments = attachments_store(s.replicas, max_age=s.attachments_max_age)
    out.append(objects_spec(attachments, owner="connector email", required=False))
    chat = StreamConfig(name=CHAT_STREAM, num_replicas=s.replicas)
    out.append(StoreSpec(CHAT_STREAM, "stream", "connector chat", chat, ("num_replicas",), required=False))
    return out


class StreamsMissing(RuntimeError):
    """Streams or buckets are missing and this connection may not create them (its NATS role
    only checks): the reason names them and says how to create them."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"NATS has no {', '.join(missing)}, and this service's NATS role may not create streams: "
            "run `relaydesk up` or `relaydesk setup` with the tool role first"
        )


async def _ensure_once(js: JetStreamContext, s: StreamSettings, *, create: bool, shrink: bool) -> Outcome:
    out = Outcome()
    for spec in stores(s):
        if spec.owner == "setup" and create:
            drift, _ = await ensure_store(js, spec, shrink=shrink)
        else:
            # Only check (a role that may not manage streams), or a lazily created store:
            # setup brings an existing one in line but leaves its creation to its owner.
            drift, current = await ensure_store(js, spec, create=False, update=create, shrink=shrink)
            if current is None and spec.required:
                out.missing.append(spec.name)
        out.drift += drift
    return out


async def ensure_streams(
    js: JetStreamContext,
    settings: StreamSettings | None = None,
    *,
    create: bool = True,
    shrink: bool = False,
    budget: float = SETUP_BUDGET_S,
    give_up: Callable[[BaseException], str] | None = None,
) -> list[Drift]:
    """Create what is missing, update what drifted (``streams.updated``); never deletes
    anything: a limit that would delete stored messages is lowered only with ``shrink``
    (``relaydesk setup``), else kept and said (``streams.limit_kept``). Waits out a busy
    NATS for ``budget`` s (``SetupFailed`` after it). Raises ``DriftRefused`` when NATS
    refuses to change a field in place (storage, retention, replicas on a single server),
    naming stream and field. With ``create`` false (a NATS role that may not manage streams)
    only check: ``StreamsMissing`` names what does not exist, and drift is logged as a
    warning (``streams.drift``). Returns the drift found, each with its outcome."""
    s = settings or StreamSettings()
    outcome = await patiently(
        lambda: _ensure_once(js, s, create=create, shrink=shrink), what="stream set-up", budget=budget, give_up=give_up
    )
    if outcome.missing:
        raise StreamsMissing(outcome.missing)
    if not create:
        for d in outcome.drift:
            log.warning("streams.drift", name=d.stream, field=d.field, old=d.old, new=d.new, fix="relaydesk setup")
    elif outcome.refused:
        raise DriftRefused(outcome.refused)
    return outcome.drift


async def stream_drift(js: JetStreamContext, settings: StreamSettings | None = None) -> list[Drift]:
    """How every existing stream and bucket differs from the wanted config (changes nothing);
    for ``relaydesk status``."""
    out: list[Drift] = []
    for spec in stores(settings):
        drift, _ = await ensure_store(js, spec, create=False, update=False)
        out += drift
    return out


_NOT_READY: tuple[type[BaseException], ...] = (NotFoundError, APIError, *TRANSIENT)


async def streams_exist(js: JetStreamContext) -> bool:
    try:
        for name in (subjects.INBOUND_STREAM, subjects.EVENTS_STREAM, subjects.OUTBOUND_STREAM):
            await js.stream_info(name)
    except _NOT_READY as err:  # missing, or NATS not answering
        log.debug("streams.not_found", error=type(err).__name__)
        return False
    return True
