"""A sink runs as its own NATS role (``sink-<name>``, services/bus/permissions.py), not as the
tool role: on a nats-server with the users ``relaydesk up`` generates, the Zendesk round trip
(SMS in → ticket → a Zendesk reply → ``rd.out.sms`` → solved → resolved) works without one
permission violation, and the sink's user cannot write what is not its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from events import subjects
from events.codec import decode_reply
from events.model import ConversationResolved, DeliverReply, ReplyRequested
from events.store import EventStore
from events.streams import ensure_streams
from services.bootstrap import auth_for, event_store
from services.bus.auth import RoleCredentials
from services.bus.embedded import EmbeddedNats, free_port
from services.bus.permissions import permissions, sink_user
from services.config import Config
from services.sinks.conformance import WebhookCall
from services.up import Started, serve_all
from tests.agents.helpers import agents_config
from tests.integration.system import API_TOKEN, System, eventually

from .zendesk_fake import FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration


class Secured:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.credentials = RoleCredentials.ensure(data_dir, {"sms": "sms"}, ["zendesk"])
        self.server = EmbeddedNats(store_dir=data_dir / "nats", config_file=self.credentials.write_server_config())

    def violations(self) -> list[str]:
        log = (self.server.store_dir / "nats-server.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Violation" in line]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    s = Secured(tmp_path / "data")
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


async def connect_as(secured: Secured, user: str, errors: list[str] | None = None) -> NATS:
    async def on_error(err: Exception) -> None:
        if errors is not None:
            errors.append(str(err))

    options = secured.credentials.auth(user).connect_options()
    return await nats.connect(secured.server.url, allow_reconnect=False, error_cb=on_error, **options)


@pytest.fixture
async def tool(secured: Secured) -> AsyncIterator[NATS]:
    nc = await connect_as(secured, "tool")
    await ensure_streams(nc.jetstream())
    try:
        yield nc
    finally:
        await nc.close()


def test_the_sink_role_is_generated_and_used_by_relaydesk_sink(secured: Secured) -> None:
    from services.config import load

    assert "sink-zendesk" in secured.credentials.passwords
    auth = auth_for(load(env={"RELAYDESK_DATA_DIR": str(secured.data_dir)}), sink_user("zendesk"))
    assert auth.user == "sink-zendesk" and not auth.may_manage_streams
    assert auth.connect_options()["inbox_prefix"] == "_INBOX_sink-zendesk"
    allowed = permissions("sink-zendesk")["publish"]["allow"]
    assert "rd.evt.c.>" in allowed and "rd.evt.>" not in allowed and "$KV.rd_sink_zendesk.>" in allowed


async def test_the_sink_user_writes_only_its_own(secured: Secured, tool: NATS) -> None:
    errors: list[str] = []
    nc = await connect_as(secured, "sink-zendesk", errors)
    try:
        for subject in ("rd.evt.a.ava", "rd.inbound.sms", "$KV.rd_identity.x", "$KV.rd_sink_freshdesk.x"):
            await nc.publish(subject, b"{}")

        async def denied_all() -> bool:
            return all(any(s.lower() in e.lower() for e in errors) for s in ("rd.evt.a.ava", "rd.inbound.sms"))

        await eventually(denied_all)
        assert any("rd_sink_freshdesk" in e for e in errors) and any("rd_identity" in e for e in errors)
    finally:
        await nc.close()


def sink_config(tmp_path: Path, secured: Secured, api_url: str, port: int) -> Config:
    config = agents_config(tmp_path, secured.server.url)
    config.data.dir = str(secured.data_dir)
    config.connectors["sms"]["outbound"] = False  # replies stay on rd.out.sms for the test to read
    config.sinks = {
        "zendesk": {**zendesk_config(api_url), "start": "beginning", "api_backoff": 0.01, "port": port},
    }
    return config


async def test_zendesk_round_trip_as_the_sink_role_has_no_permission_violation(
    tmp_path: Path, secured: Secured, tool: NATS
) -> None:
    fake = FakeZendesk()
    api_url = await fake.start()
    port = free_port()
    config = sink_config(tmp_path, secured, api_url, port)
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(
        serve_all(config, secured.server.url, API_TOKEN, stop, started.append, credentials=secured.credentials)
    )
    store = event_store(tool)
    try:
        await eventually(lambda: _started(started, task), timeout=30)
        sms_url = started[0].connector_urls["sms"][0].rstrip("/") + "/twilio/sms"
        async with aiohttp.ClientSession() as http:
            system = System(config, f"http://{config.api.host}:{config.api.port}", sms_url, http, secured.server)
            phone = "+15557770003"
            assert await system.send_sms("SM" + uuid.uuid4().hex, phone, "My invoice is wrong") == 200
            customer = await eventually(lambda: system.customer(phone), timeout=20)
            conv = await eventually(lambda: system.conversation_of(customer), timeout=20)
            cid = conv["id"]
            await eventually(lambda: _status(system, cid, "offered"), timeout=20)
            status, body = await system.post(f"/v1/conversations/{cid}/accept", {})
            assert status == 200, body

            ticket = await eventually(lambda: _value(fake.ticket_of(cid)), timeout=20)
            assert [c.body for c in ticket.comments] == ["My invoice is wrong"]
            code, answer = await _post(http, port, fake.agent_reply(ticket, "Refunded."))
            assert code == 200 and answer["acted"] is True, answer

            async def from_zendesk() -> list[ReplyRequested]:
                events = await store.read_customer_direct(customer)
                return [
                    s.event for s in events if isinstance(s.event, ReplyRequested) and s.event.actor == "sink:zendesk"
                ]

            [reply] = await eventually(from_zendesk)
            queued = await eventually(lambda: _queued(tool, store, reply.reply_id))
            assert queued.contact == phone and queued.text == "Refunded."

            code, answer = await _post(http, port, fake.solve(ticket))
            assert code == 200 and answer["acted"] is True, answer
            await eventually(lambda: _status(system, cid, "resolved"), timeout=20)
            resolved = [s.event for s in await store.read_customer_direct(customer)]
            assert [e.actor for e in resolved if isinstance(e, ConversationResolved)] == ["sink:zendesk"]
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
        await fake.stop()
    assert code == 0
    assert secured.violations() == []


async def _started(started: list[Started], task: asyncio.Task[int]) -> bool:
    if task.done():
        raise AssertionError(f"the system stopped early: {task.result()!r}")
    return bool(started)


async def _status(system: System, cid: str, status: str) -> bool:
    code, body = await system.get(f"/v1/conversations/{cid}")
    return code == 200 and body["status"] == status


async def _value(value: object) -> object:
    return value


async def _post(http: aiohttp.ClientSession, port: int, call: WebhookCall) -> tuple[int, dict[str, object]]:
    async with http.post(f"http://127.0.0.1:{port}{call.path}", data=call.body, headers=call.headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _queued(nc: NATS, store: EventStore, reply_id: str) -> DeliverReply | None:
    js = nc.jetstream()
    seq = 1
    while True:
        try:
            raw = await js.get_msg(subjects.OUTBOUND_STREAM, seq=seq, subject=subjects.outbound("sms"), next=True)
        except NotFoundError:
            return None
        reply = decode_reply(raw.data or b"")
        if reply.reply_id == reply_id:
            return await store.cipher.open_reply(reply) if store.cipher else reply
        seq = int(raw.seq or seq) + 1
