"""Harness for the agents' side: the whole system in-process over a real nats-server, local
receivers for webhooks and Slack, and an agent-token client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
from aiohttp import web

from events.model import Attachment
from events.store import EventStore, StoredEvent
from events.stream_setup import ensure_store
from events.stream_specs import objects_spec
from events.streams import ATTACHMENTS_BUCKET, attachments_store, ensure_streams
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats, free_port
from services.config import AgentSeed, Config
from services.delivery.service import DeliveryService
from services.delivery.settings import Endpoint
from tests.integration.system import API_TOKEN, System, eventually, open_conversation, running_system, system_config

__all__ = ["API_TOKEN", "AgentSystem", "Receiver", "agent_system", "eventually", "holds", "receiver"]


def holds(condition: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A synchronous condition as a probe for ``eventually``."""

    async def probe() -> Any:
        return condition()

    return probe


ROSTER = (
    AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}, tier=1),
    AgentSeed(id="bruno", name="Bruno", skills={"billing": 3}, languages={"es": 5}, tier=1),
)


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class Receiver:
    """A local HTTP receiver: answers with ``script`` in order, then ``then``."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    then: int = 200
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        status = self.script.pop(0) if self.script else self.then
        self.seen.append(Seen(dict(request.headers), await request.read(), status))
        return web.Response(status=status, text="ok" if status < 300 else "receiver says no")

    def ok(self) -> list[Seen]:
        return [s for s in self.seen if s.status < 300]


@contextlib.asynccontextmanager
async def receiver(script: list[int] | None = None, then: int = 200) -> AsyncIterator[Receiver]:
    rec = Receiver(script=list(script or []), then=then)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


@dataclass
class AgentSystem:
    system: System
    store: EventStore

    @property
    def api(self) -> str:
        return self.system.api

    async def call(
        self, method: str, path: str, token: str = API_TOKEN, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.system.http.request(method, self.api + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def issue_token(self, agent_id: str) -> tuple[str, str]:
        status, body = await self.call("POST", f"/v1/agents/{agent_id}/tokens", body={"label": "test"})
        assert status == 201, body
        return body["token"], body["token_id"]

    async def open(self, *, channel: str = "sms", language: str = "en", text: str = "hello") -> tuple[str, str]:
        """A new conversation as intake would write it; returns (customer id, conversation id)."""
        customer, conversation = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
        await open_conversation(self.store, customer, conversation, channel=channel, language=language, text=text)
        return customer, conversation

    async def conversation(self, cid: str, status: str | None = None) -> dict[str, Any] | None:
        code, body = await self.call("GET", f"/v1/conversations/{cid}")
        if code != 200 or (status is not None and body["status"] != status):
            return None
        return body  # type: ignore[no-any-return]

    async def offered_to(self, cid: str, agent: str, timeout: float = 20.0) -> dict[str, Any]:
        """The conversation once it is offered to ``agent`` (waits for it)."""

        async def probe() -> dict[str, Any] | None:
            conv = await self.conversation(cid, "offered")
            return conv if conv is not None and conv["agent_id"] == agent else None

        return await eventually(probe, timeout=timeout)

    async def deliveries(self, status: str | None = None) -> list[dict[str, Any]]:
        path = "/v1/deliveries" + (f"?status={status}" if status else "")
        code, body = await self.call("GET", path)
        assert code == 200, body
        return body["deliveries"]  # type: ignore[no-any-return]

    async def log(self, customer_id: str) -> list[StoredEvent]:
        return await self.store.read_customer(customer_id)

    def delivery_service(self, config: Config, instance_id: str = "") -> DeliveryService:
        """A delivery service of this system's own, run by the test (``services`` without it)."""
        return DeliveryService(
            self.store, config.delivery, console_url=self.api + "/console", api_url=self.api, instance_id=instance_id
        )


async def ok(s: AgentSystem, method: str, path: str, token: str = API_TOKEN, body: dict[str, Any] | None = None) -> Any:
    """The answer of a call that must succeed (2xx)."""
    status, answer = await s.call(method, path, token, body or {})
    assert status < 300, (method, path, status, answer)
    return answer


def agents_config(tmp_path: Path, nats_url: str, endpoints: tuple[Endpoint, ...] = (), **delivery: Any) -> Config:
    config = system_config(tmp_path, nats_url)
    config.agents = ROSTER
    settings = {"backoff_base": 0.05, "backoff_max": 0.2, "max_attempts": 3, "timeout": 2.0, **delivery}
    config.delivery = msgspec.structs.replace(
        config.delivery, endpoints=endpoints, teams={"billing": ("ava", "bruno")}, **settings
    )
    return config


@contextlib.asynccontextmanager
async def agent_system(
    config: Config, server: EmbeddedNats, services: tuple[str, ...] | None = None, config_path: Path | None = None
) -> AsyncIterator[AgentSystem]:
    nc = await nats.connect(server.url)
    await ensure_streams(nc.jetstream())
    try:
        async with running_system(config, server, services, config_path) as system:
            yield AgentSystem(system, event_store(nc))  # opens what the services sealed
    finally:
        await nc.drain()


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


async def stored_attachment(store: EventStore, data: bytes, *, name: str, content_type: str) -> Attachment:
    """``data`` in the attachments object store as the email connector stores a mail's file
    (the bucket made first, as the connector would, through ``events.stream_setup``)."""
    js = store.js
    await ensure_store(js, objects_spec(attachments_store(1), "test"))
    digest = hashlib.sha256(data).hexdigest()
    await (await js.object_store(ATTACHMENTS_BUCKET)).put(digest, data)
    return Attachment(url=f"nats-object://{ATTACHMENTS_BUCKET}/{digest}", content_type=content_type, name=name)
