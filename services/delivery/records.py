"""Delivery records: one per (fact, endpoint, agent), in the ``rd_deliveries`` KV bucket.

A record holds the notice as sent (so a retry sends the same content), every attempt with
its outcome, and the status: ``pending`` (being delivered or waiting for its next try),
``delivered``, ``failed`` (dead-lettered, with the reason) or ``retry_requested`` (an
operator asked for a new round; the delivery service picks it up). Keys are deterministic
(``dl-<seq>-<endpoint>-<agent>``), so a delivery service that restarts behind its
checkpoint never creates a second record for the same fact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from events.stream_setup import SETUP_BUDGET_S, ensure_store, patiently
from events.stream_specs import kv_spec
from events.streams import DELIVERIES_BUCKET, DELIVERY_RECORD_TTL, deliveries_bucket

BUCKET = DELIVERIES_BUCKET
RECORD_TTL = DELIVERY_RECORD_TTL  # records vanish two weeks after their last change

# superseded: the log answered the notice before it could go out (an offer accepted,
# declined or expired, the conversation moved or resolved while its endpoint was down).
Status = Literal["pending", "delivered", "failed", "retry_requested", "superseded"]
STATUSES: tuple[str, ...] = ("pending", "delivered", "failed", "retry_requested", "superseded")


class Attempt(msgspec.Struct, kw_only=True):
    round: int = 1  # 1, then 2 after an operator's retry, ...
    n: int  # attempt number within its round
    at: datetime
    ok: bool
    status_code: int | None = None
    error: str = ""
    ms: int = 0


class DeliveryRecord(msgspec.Struct, kw_only=True):
    id: str
    endpoint_id: str
    kind: str
    agent_id: str
    notice: str  # offer, assigned, message, ...
    seq: int
    conversation_id: str = ""
    customer_id: str = ""
    status: Status = "pending"
    created_at: datetime
    updated_at: datetime
    rounds: int = 1
    attempts: list[Attempt] = []
    reason: str = ""
    next_attempt_at: datetime | None = None
    body: dict[str, Any] = {}
    # The W3C trace context of the fact it tells of (tracing on): a delivery resumed after a
    # restart continues that trace too; an operator finds the trace of a delivery by it.
    trace: dict[str, str] = {}


def record_id(seq: int, endpoint_id: str, agent_id: str) -> str:
    return f"dl-{seq}-{endpoint_id}-{agent_id}"


_decoder = msgspec.json.Decoder(DeliveryRecord)


def decode(raw: bytes) -> DeliveryRecord:
    return _decoder.decode(raw)


def encode(record: DeliveryRecord) -> bytes:
    return msgspec.json.encode(record)


async def bucket(
    js: JetStreamContext, replicas: int = 1, *, update: bool = True, budget: float = SETUP_BUDGET_S
) -> KeyValue:
    """The bucket, created with ``replicas`` if missing (its config: ``events.streams``); with
    ``update`` an existing one is brought in line (the delivery service; the API only reads).
    A busy NATS is waited out for ``budget`` seconds (0: one try, for a request handler)."""
    spec = kv_spec(deliveries_bucket(replicas), owner="delivery", required=False)

    async def open_bucket() -> KeyValue:
        await ensure_store(js, spec, update=update)
        return await js.key_value(BUCKET)

    if budget <= 0:
        return await open_bucket()
    return await patiently(open_bucket, what=f"KV bucket {BUCKET}", budget=budget)


def summary(record: DeliveryRecord, *, with_body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(record)
    if not with_body:
        out.pop("body", None)
    out["attempt_count"] = len(record.attempts)
    return out
