"""A running Relaydesk (intake, projector, router, API) over a private nats-server, and ways to
make customers write to it: inbound messages published as a connector would."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import Channel, InboundMessage
from events.store import EventStore
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.customers.service import Customers
from services.identity import IdentityDirectory
from tests.integration.system import System, eventually, running_system, system_config

SERVICES = ("intake", "router", "projector", "api")


@dataclass
class Desk:
    system: System
    nc: NATS
    store: EventStore

    async def write(self, channel: Channel, sender: str, text: str, *, metadata: dict[str, str] | None = None) -> str:
        """Publish an inbound message as the channel's connector would; returns its provider id."""
        provider_id = uuid.uuid4().hex
        message = InboundMessage(
            at=datetime.now(UTC),
            channel=channel,
            provider="test",
            provider_message_id=provider_id,
            sender=sender,
            recipient="support@localhost" if channel == "email" else "+15557654321",
            text=text,
            metadata=metadata or {},
        )
        await self.nc.jetstream().publish(
            subjects.inbound(channel), encode(message), headers={"Nats-Msg-Id": f"{channel}:{provider_id}"}
        )
        return provider_id

    async def customer_of(self, identity: str) -> str:
        async def probe() -> str | None:
            status, body = await self.system.get("/v1/customers", identity=identity)
            return body["customers"][0]["customer_id"] if status == 200 else None

        return await eventually(probe)

    async def timeline_texts(self, customer_id: str, *expected: str) -> list[dict[str, Any]]:
        """The customer's timeline once every ``expected`` inbound text is on it."""

        async def probe() -> list[dict[str, Any]] | None:
            status, body = await self.system.get(f"/v1/customers/{customer_id}/timeline")
            entries: list[dict[str, Any]] = body.get("entries", []) if status == 200 else []
            texts = {e.get("text") for e in entries if e["kind"] == "message_in"}
            return entries if set(expected) <= texts else None

        return await eventually(probe)

    async def put(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        headers = {"Authorization": "Bearer test-operator-token"}
        async with self.system.http.put(self.system.api + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": "Bearer test-operator-token"}
        async with self.system.http.delete(self.system.api + path, json=body or {}, headers=headers) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def running_desk(tmp_path: Path, server: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_system(system_config(tmp_path, server.url), server, SERVICES) as system:
        nc = await nats.connect(server.url)
        try:
            # Opens personal data like the services do (events.personal seals it on the log).
            yield Desk(system, nc, event_store(nc, system.config))
        finally:
            await nc.drain()


async def customers_of(nc: NATS, store: EventStore) -> Customers:
    """The customers' commands as the API and the CLI run them, on ``nc``."""
    return Customers(store, IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET)))


async def customer(customers: Customers, identity: str) -> str:
    """A new customer known by ``identity``."""
    customer_id, _ = await customers.directory.resolve(identity)
    await customers.create(customer_id, identity)
    return customer_id
