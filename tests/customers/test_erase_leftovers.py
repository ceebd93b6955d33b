"""What an erasure used to leave behind (found by a data-protection audit of a running system):

- an API answer kept for ``Idempotency-Key`` (sealed, so it was never matched): replaying the
  request after the erasure answered the customer's name;
- a dead letter that would not decode (an attachment list that is a string, bytes that are
  not JSON): it stayed parked and on ``RD_INBOUND`` with the customer's number in clear;
- an unparseable mail naming the customer: parked with its raw bytes in the object store;
- a reply still queued on ``RD_OUTBOUND``: a connector holding the key cached sent it after
  the erasure, on a retry.

Every service runs over a real nats-server (``running_system``)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import ObjectNotFoundError

from connectors.email.unparsed import park_unparsed
from events import subjects
from events.codec import encode
from events.model import DeliverReply, InboundMessage
from events.msg_get import stored_messages
from events.streams import ATTACHMENTS_BUCKET, IDEMPOTENCY_BUCKET
from services.api.idempotency import Record
from services.bus.embedded import EmbeddedNats
from tests.integration.system import API_TOKEN, System, eventually, running_system, system_config

pytestmark = pytest.mark.integration

PHONE = "+15551230077"


async def call(system: System, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if key:
        headers["Idempotency-Key"] = key
    async with system.http.request(method, system.api + path, json=body, headers=headers) as r:
        return r.status, {"replayed": r.headers.get("Idempotent-Replayed"), "body": await r.text()}


async def parked_keys(system: System) -> set[str]:
    status, body = await system.get("/v1/dlq")
    assert status == 200, body
    return {p["key"] for p in body["parked"]}


async def kept_answers_naming(nc: NATS, customer_id: str) -> int:
    found = 0
    async for _, data in stored_messages(nc.jetstream(), f"KV_{IDEMPOTENCY_BUCKET}", f"$KV.{IDEMPOTENCY_BUCKET}.>"):
        if data and customer_id in msgspec.json.decode(data, type=Record).refs:
            found += 1
    return found


async def held(nc: NATS, stream: str, filter_subject: str, needle: bytes) -> int:
    return sum([needle in data async for _, data in stored_messages(nc.jetstream(), stream, filter_subject)])


async def test_an_erasure_leaves_no_kept_answer_dead_letter_unparsed_mail_or_queued_reply(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats) as system:
        nc = await nats.connect(clean_nats.url)
        try:
            js = nc.jetstream()
            assert await system.send_sms("SM" + "5" * 32, PHONE, "hello") == 200
            customer_id = await eventually(lambda: system.customer(PHONE))

            # A kept answer that names her.
            patch = {"name": "Zelda Quartermain"}
            status, first = await call(system, "PATCH", f"/v1/customers/{customer_id}", patch, key="patch-1")
            assert status == 200 and "Zelda" in first["body"]
            assert await kept_answers_naming(nc, customer_id) == 1

            # Two dead letters no reader can decode, both with her number in clear.
            good = InboundMessage(
                at=datetime.now(UTC),
                channel="sms",
                provider="twilio",
                sender=PHONE,
                provider_message_id="SMbad1",
                text="MARKER-7731",
            )
            malformed = {**msgspec.to_builtins(good), "attachments": "not a list"}
            await js.publish(subjects.inbound("sms"), msgspec.json.encode(malformed))
            await js.publish(subjects.inbound("sms"), f"garbage from {PHONE}: MARKER-7731".encode())
            await eventually(lambda: _at_least(parked_keys(system), 2))
            dead = {k for k in await parked_keys(system) if k.startswith(subjects.INBOUND_STREAM)}
            assert len(dead) == 2

            # An unparseable mail that names her number, parked as the email connector parks one.
            raw = f"From: nobody@\r\n\r\nplease call me back on {PHONE} MARKER-7731".encode()
            await js.create_object_store(ATTACHMENTS_BUCKET)  # the email connector's (not running here)
            objects = lambda: js.object_store(ATTACHMENTS_BUCKET)  # noqa: E731
            mail_key = await park_unparsed(
                js, objects, raw=raw, source="smtp", error="no sender", bucket=ATTACHMENTS_BUCKET, timeout=5
            )

            # A reply still waiting for its connector (no WhatsApp connector runs here).
            queued = DeliverReply(
                conversation_id="cv_queued",
                customer_id=customer_id,
                channel="whatsapp",
                reply_id="rp_queued",
                contact="sealed",
                text="sealed",
            )
            await js.publish(subjects.outbound("whatsapp"), encode(queued))

            status, erased = await call(system, "DELETE", f"/v1/customers/{customer_id}?reason=DSR-7731")
            assert status == 200, erased
            report = msgspec.json.decode(erased["body"])
            kept = await kept_answers_naming(nc, customer_id)

            # Replaying the kept request runs it again, on an erased customer: refused, nothing quoted.
            status, replay = await call(system, "PATCH", f"/v1/customers/{customer_id}", patch, key="patch-1")
            left_parked = await parked_keys(system)
            inbound_left = await held(nc, subjects.INBOUND_STREAM, subjects.INBOUND_ALL, PHONE.encode())
            outbound_left = await held(nc, subjects.OUTBOUND_STREAM, subjects.OUTBOUND_ALL, customer_id.encode())
            store = await js.object_store(ATTACHMENTS_BUCKET)
            with pytest.raises(ObjectNotFoundError):
                await store.get(hashlib.sha256(raw).hexdigest())  # the mail's raw bytes went with it
        finally:
            await nc.drain()
    assert replay["replayed"] is None and "Zelda" not in replay["body"] and status == 410
    assert kept == 0
    assert not (dead | {mail_key}) & left_parked
    assert inbound_left == 0  # neither the good message nor the two dead letters
    assert outbound_left == 0 and report["queued_replies"] == 1


async def _at_least(found: Any, count: int) -> bool | None:
    return True if len(await found) >= count else None
