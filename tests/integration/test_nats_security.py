"""Issue 9, guarded: NATS security on by default. Real nats-servers started with the config
``relaydesk up`` generates (services/bus/auth.py): anonymous clients are refused, a connector
can neither append to the log nor read another channel's replies, and the whole system, each
service and connector with its own role, still works end to end without one permission
violation in the server's log."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import smtplib
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig

from events import subjects
from events.codec import encode
from events.model import AgentTokenIssued, DeliverReply, MessageSent
from events.store import EventStore
from events.streams import StreamsMissing, ensure_streams
from services.bootstrap import connect
from services.bus.auth import CREDENTIALS_DIR, NatsAuth, RoleCredentials
from services.bus.embedded import EmbeddedNats, free_port
from services.bus.permissions import connector_user, object_key
from services.config import Config
from services.up import BUILT_IN_CONNECTORS, Started, connector_channels, serve_all, with_built_in_connectors
from tests.connectors.chat.helpers import SECRET, SITE, WIDGET_KEY, chat_socket, open_session, recv_until
from tests.integration.fake_twilio import ACCOUNT_SID, OUR_NUMBER, FakeTwilio
from tests.integration.system import API_TOKEN, System, accept_if_offered, eventually, system_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]

# How long a refused request waits: NATS answers a denied request with nothing, so it times out.
DENIED_TIMEOUT = 1.0


@dataclass
class Secured:
    server: EmbeddedNats
    credentials: RoleCredentials
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def violations(self) -> list[str]:
        log = (self.server.store_dir / "nats-server.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Violation" in line]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    """A nats-server with the users and permissions ``relaydesk up`` generates."""
    data_dir = tmp_path / "data"
    credentials = RoleCredentials.ensure(data_dir, connector_channels(BUILT_IN_CONNECTORS))
    server = EmbeddedNats(store_dir=data_dir / "nats", config_file=credentials.write_server_config())
    server.start()
    try:
        yield Secured(server, credentials, data_dir)
    finally:
        server.stop()


class Client:
    """A connection as one role, with the permission errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def connect(self, url: str, auth: NatsAuth) -> NATS:
        async def error_cb(err: Exception) -> None:
            self.errors.append(str(err))

        self.nc = await nats.connect(url, allow_reconnect=False, error_cb=error_cb, **auth.connect_options())
        return self.nc

    def denied(self, subject: str) -> bool:
        return any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors)


@contextlib.asynccontextmanager
async def as_role(secured: Secured, user: str) -> AsyncIterator[tuple[NATS, Client]]:
    client = Client()
    nc = await client.connect(secured.url, secured.credentials.auth(user))
    try:
        yield nc, client
    finally:
        await nc.close()


@pytest.fixture
async def tool(secured: Secured) -> AsyncIterator[NATS]:
    async with as_role(secured, "tool") as (nc, _):
        await ensure_streams(nc.jetstream())
        yield nc


async def _quiet(err: Exception) -> None:
    return None


async def test_anonymous_and_wrong_credentials_are_refused(secured: Secured) -> None:
    for options in ({}, {"user": "intake", "password": "not-the-password"}, {"user": "nobody", "password": "x"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(secured.url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet, **options)
    nc = await nats.connect(secured.url, allow_reconnect=False, **secured.credentials.auth("intake").connect_options())
    assert nc.is_connected
    await nc.close()


def test_credentials_are_private_and_kept(secured: Secured) -> None:
    directory = secured.data_dir / CREDENTIALS_DIR
    assert stat.S_IMODE(secured.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert {f.name for f in files} >= {"tool.password", "intake.password", "connector-sms.password"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    again = RoleCredentials.ensure(secured.data_dir, connector_channels(BUILT_IN_CONNECTORS))
    assert again.passwords == secured.credentials.passwords


async def test_a_connector_cannot_append_to_the_log(secured: Secured, tool: NATS) -> None:
    before = (await tool.jetstream().stream_info(subjects.EVENTS_STREAM)).state.last_seq
    forged = AgentTokenIssued(at=datetime.now(UTC), agent_id="ava", token_id="forged", token_hash="0" * 64, actor="api")
    subject = subjects.agent("ava")
    async with as_role(secured, connector_user("sms")) as (nc, client):
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream().publish(subject, encode(forged), timeout=DENIED_TIMEOUT)
        await nc.publish("rd.evt.c.someone._customer", b"{}")  # core publish: refused too
        await nc.flush()
        await eventually(lambda: _true(client.denied(subject) and client.denied("rd.evt.c.someone._customer")))
    after = (await tool.jetstream().stream_info(subjects.EVENTS_STREAM)).state.last_seq
    assert after == before
    assert any(f'"{subject}"' in line and "connector-sms" in line for line in secured.violations())


async def test_a_role_saves_only_its_own_snapshots(secured: Secured, tool: NATS) -> None:
    """The router, the API and delivery share ``rd_snapshots``: each may save its own
    snapshots, none may replace another's (the router would load a forged routing state)."""
    from events.objects import read_object, save_object
    from services.api.view_snapshot import SNAPSHOT_NAME as API_VIEW
    from services.delivery.snapshots import SNAPSHOT_NAME as DELIVERY
    from services.reports.projection import SNAPSHOT_NAME as REPORTS
    from services.router_runner import SNAPSHOT_NAME as ROUTER

    bucket = subjects.SNAPSHOT_BUCKET
    for role, name in (("router", ROUTER), ("api", API_VIEW), ("api", REPORTS), ("delivery", DELIVERY)):
        async with as_role(secured, role) as (nc, client):
            assert await save_object(nc.jetstream(), bucket, name, f"{role}'s own".encode(), skip_as="test", seq=1)
            assert not client.errors, (role, name, client.errors)
    async with as_role(secured, "delivery") as (nc, client):
        assert not await save_object(nc.jetstream(), bucket, ROUTER, b"forged state", skip_as="test", seq=1)
    assert await read_object(tool.jetstream(), bucket, ROUTER) == b"router's own"
    assert any("delivery" in line and f".M.{object_key(ROUTER)}" in line for line in secured.violations())


async def test_a_connector_reads_only_its_own_channels_replies(secured: Secured, tool: NATS) -> None:
    js = tool.jetstream()
    for channel in ("sms", "social"):
        reply = DeliverReply(
            customer_id="c1",
            conversation_id="v1",
            channel=channel,
            reply_id=f"r-{channel}",
            contact="+15550000000",
            text="hello",
        )
        await js.publish(subjects.outbound(channel), encode(reply))
    social_seq = (await js.stream_info(subjects.OUTBOUND_STREAM)).state.last_seq
    async with as_role(secured, connector_user("sms")) as (nc, client):
        sms_js = nc.jetstream(timeout=DENIED_TIMEOUT)
        # Another connector's durable, a filter on another channel, an ephemeral reader, gets.
        out = subjects.OUTBOUND_STREAM
        attempts: list[tuple[str, Any]] = [
            ("connector_social", sms_js.pull_subscribe("rd.out.social", durable="connector_social", stream=out)),
            (
                "connector_sms.rd.out.social",
                sms_js.add_consumer(out, ConsumerConfig(name="connector_sms", filter_subject="rd.out.social")),
            ),
            ("CONSUMER.CREATE.RD_OUTBOUND", sms_js.add_consumer(out, ConsumerConfig(filter_subject="rd.out.>"))),
            ("STREAM.MSG.GET.RD_OUTBOUND", sms_js.get_msg(out, social_seq)),
            ("DIRECT.GET.RD_OUTBOUND", sms_js.get_msg(out, social_seq, direct=True)),
            ("DIRECT.GET.RD_OUTBOUND", sms_js.get_last_msg(out, "rd.out.social", direct=True)),
            ("STREAM.PURGE.RD_OUTBOUND", sms_js.purge_stream(out)),
            ("STREAM.DELETE.RD_EVENTS", sms_js.delete_stream("RD_EVENTS")),
            ("STREAM.UPDATE.RD_INBOUND", sms_js.update_stream(_inbound_config(tool))),
        ]
        for what, attempt in attempts:
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await attempt
            await eventually(functools.partial(_denied, client, what), timeout=5)
        # Its own: the durable on rd.out.sms gets the sms reply, and only that one.
        sub = await sms_js.pull_subscribe("rd.out.sms", durable="connector_sms", stream="RD_OUTBOUND")
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.subject == "rd.out.sms"
        await msg.ack_sync()
    assert (await js.stream_info("RD_OUTBOUND")).state.messages == 1  # social's reply is untouched


def _inbound_config(tool: NATS) -> Any:
    from events.streams import StreamSettings, _stream_configs

    return _stream_configs(StreamSettings())[0]


async def test_a_service_role_only_checks_the_streams_and_names_what_is_missing(secured: Secured) -> None:
    config = system_config(secured.data_dir.parent, secured.url)
    with pytest.raises(SystemExit, match=r"RD_INBOUND.*relaydesk up"):
        async with connect(config, auth=secured.credentials.auth("router")):
            pass
    async with as_role(secured, "projector") as (nc, client):
        with pytest.raises(StreamsMissing, match="RD_EVENTS"):
            await ensure_streams(nc.jetstream(), create=False)
        assert client.errors == []  # checked, not attempted


async def _true(value: bool) -> bool:
    return value


async def _denied(client: Client, subject: str) -> bool:
    return client.denied(subject)


# -- the whole system under its permissions -----------------------------------------------------


def secured_config(tmp_path: Path, secured: Secured, twilio_url: str) -> Config:
    config = system_config(tmp_path, secured.url)
    config.data.dir = str(secured.data_dir)
    config = with_built_in_connectors(config, secured.data_dir)
    config.connectors["sms"].update(account_sid=ACCOUNT_SID, from_number=OUR_NUMBER, api_base_url=twilio_url)
    config.connectors["email"].update(port=free_port(), smtp_port=free_port())
    config.connectors["social"].update(port=free_port())
    config.connectors["chat"].update(
        port=free_port(), widget_key=WIDGET_KEY, session_secret=SECRET, allowed_origins=[SITE]
    )
    return config


async def test_every_service_and_connector_works_end_to_end_under_its_own_role(
    tmp_path: Path,
    secured: Secured,
    fake_twilio: tuple[FakeTwilio, str],
) -> None:
    fake, twilio_url = fake_twilio
    config = secured_config(tmp_path, secured, twilio_url)
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(
        serve_all(config, secured.url, API_TOKEN, stop, started.append, credentials=secured.credentials)
    )
    try:
        await eventually(lambda: _started(started, task), timeout=30)
        assert set(started[0].connector_urls) == set(BUILT_IN_CONNECTORS)
        sms_url = started[0].connector_urls["sms"][0].rstrip("/") + "/twilio/sms"
        async with aiohttp.ClientSession() as http:
            system = System(config, f"http://{config.api.host}:{config.api.port}", sms_url, http, secured.server)
            phone = "+15551230009"
            assert await system.send_sms("SM" + "e" * 32, phone, "my invoice is wrong") == 200
            customer_id = await eventually(lambda: system.customer(phone), timeout=20)
            conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
            reply = {"text": "A refund is on its way."}
            status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", reply)
            assert status == 202, body
            await eventually(lambda: _true(len(fake.messages) >= 1), timeout=20)
            assert fake.messages[0]["To"] == phone
            await eventually(lambda: _sent(secured, customer_id), timeout=20)
            # An email with an attachment: the email connector's own bucket and keys.
            smtp_port = int(config.connectors["email"]["smtp_port"])
            await asyncio.to_thread(_send_email, smtp_port)
            await eventually(lambda: _customer(system, "email:dana@example.com"), timeout=20)
            # A web chat visitor: RD_CHAT history, the live subjects, a reply pushed to the socket.
            await _chat_round_trip(system, started[0].connector_urls["chat"][0].rstrip("/"))
            # Erasure through the API: identity mappings, raw messages, delivery records, keys.
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            erase = f"{system.api}/v1/customers/{customer_id}"
            async with http.delete(erase, json={"reason": "GDPR request"}, headers=headers) as r:
                assert r.status == 200, await r.text()
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
    assert code == 0
    assert secured.violations() == []


async def test_before_delivery_made_its_bucket_the_api_has_no_delivery_records(
    tmp_path: Path, secured: Secured, tool: NATS
) -> None:
    """The API may read delivery records but not create their bucket, which the delivery
    service makes when it first runs. Until then there are no records: the API said so by
    waiting out NATS's refusal to create it, then answering a blank 504."""
    from services.runners import run_api

    config = system_config(tmp_path, secured.url)
    config.data.dir = str(secured.data_dir)
    stop, ready = asyncio.Event(), asyncio.Event()
    async with connect(config, secured.url, auth=secured.credentials.auth("api"), role="api") as bus:
        task = asyncio.create_task(run_api(config, bus, API_TOKEN, stop, ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            api = f"http://{config.api.host}:{config.api.port}"
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=4)) as http:
                async with http.get(f"{api}/v1/deliveries", params={"status": "failed"}) as r:
                    assert (r.status, await r.json()) == (200, {"deliveries": [], "count": 0})
                async with http.get(f"{api}/v1/deliveries/d-1") as r:
                    assert (r.status, await r.json()) == (404, {"error": "no delivery d-1"})
                async with http.post(f"{api}/v1/deliveries/d-1/retry") as r:
                    assert r.status == 404, await r.text()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert not await _exists(tool, "KV_rd_deliveries")
    assert [line for line in secured.violations() if "rd_deliveries" in line] == []


async def _exists(nc: NATS, stream: str) -> bool:
    try:
        await nc.jetstream().stream_info(stream)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _chat_round_trip(system: System, chat_url: str) -> None:
    status, session = await open_session(chat_url)
    assert status == 200, session
    async with chat_socket(chat_url, session["token"]) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "c-1", "text": "Where is my parcel?"}))
        assert (await recv_until(ws, "ack"))["client_msg_id"] == "c-1"
        conv = await eventually(lambda: _open_conversation(system, "chat"), timeout=20)
        conv = await accept_if_offered(system, conv)
        status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", {"text": "On its way"})
        assert status == 202, body
        frame = await recv_until(ws, "reply", timeout=20)
        assert frame["text"] == "On its way"


async def _open_conversation(system: System, channel: str) -> dict[str, Any] | None:
    status, body = await system.get("/v1/conversations")
    assert status == 200, body
    for conv in body["conversations"]:
        if conv["channel"] == channel and conv["status"] in ("offered", "assigned"):
            return conv  # type: ignore[no-any-return]
    return None


def _send_email(port: int) -> None:
    message = EmailMessage()
    message["From"] = "Dana <dana@example.com>"
    message["To"] = "support@localhost"
    message["Subject"] = "Refund"
    message["Message-ID"] = "<first@example.com>"
    message.set_content("Please refund my invoice.")
    message.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


async def _customer(system: System, identity: str) -> bool:
    status, body = await system.get("/v1/customers", identity=identity)
    return status == 200 and bool(body["customers"])


async def _started(started: list[Started], task: asyncio.Task[int]) -> bool:
    if task.done():
        raise AssertionError(f"the system stopped early: {task.result()!r}")
    return bool(started)


async def _sent(secured: Secured, customer_id: str) -> bool:
    async with as_role(secured, "tool") as (nc, _):
        events = await EventStore(nc, nc.jetstream()).read_customer(customer_id)
    return any(isinstance(e.event, MessageSent) for e in events)


def test_env_names_credentials(tmp_path: Path) -> None:
    from services.bootstrap import auth_for
    from services.config import load

    env = {
        "RELAYDESK_NATS_USER": "relaydesk",
        "RELAYDESK_NATS_PASSWORD": "secret",
        "RELAYDESK_NATS_TLS_CA": "/etc/ca.pem",
        "RELAYDESK_DATA_DIR": str(tmp_path),
    }
    auth = auth_for(load(env=env), "intake")
    assert (auth.user, auth.password, auth.tls_ca) == ("relaydesk", "secret", "/etc/ca.pem")
    assert auth.may_manage_streams  # one external user, not one of Relaydesk's roles: as today


def test_without_configured_credentials_a_role_uses_those_up_generated(secured: Secured) -> None:
    from services.bootstrap import auth_for
    from services.config import load

    config = load(env={"RELAYDESK_DATA_DIR": str(secured.data_dir)})
    intake = auth_for(config, "intake")
    assert (intake.user, intake.password) == ("intake", secured.credentials.passwords["intake"])
    assert not intake.may_manage_streams
    assert intake.connect_options()["inbox_prefix"] == "_INBOX_intake"
    assert auth_for(config, "tool").may_manage_streams
    assert not auth_for(load(env={"RELAYDESK_DATA_DIR": str(secured.data_dir / "elsewhere")}), "tool").has_identity


# -- deploy/nats: the cluster's users are the same ------------------------------------------------

DEPLOY_NATS = Path(__file__).parents[2] / "deploy" / "nats"


def test_the_shipped_cluster_users_are_the_generated_ones() -> None:
    from services.bus.permissions import cluster_auth_config

    assert (DEPLOY_NATS / "auth.conf").read_text() == cluster_auth_config(), (
        "deploy/nats/auth.conf is stale: relaydesk setup --nats-auth-config > deploy/nats/auth.conf"
    )
    assert "include ./auth.conf" in (DEPLOY_NATS / "cluster.conf").read_text()


async def test_a_server_with_the_cluster_users_takes_passwords_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.bus.permissions import password_env

    users = ["tool", "intake", "router", "projector", "delivery", "api"]
    users += [connector_user(name) for name in (*BUILT_IN_CONNECTORS, "voice")]
    users += ["sink-zendesk", "sink-freshdesk"]  # optional in deploy/, but always in the cluster's users
    shipped = set(re.findall(r'user: "([^"]+)"', (DEPLOY_NATS / "auth.conf").read_text()))
    assert shipped == set(users), "every deployed service has its own NATS user, and nothing else does"
    for user in users:
        monkeypatch.setenv(password_env(user), f"pw-{user}")
    (tmp_path / "auth.conf").write_text((DEPLOY_NATS / "auth.conf").read_text())
    (tmp_path / "server.conf").write_text("include ./auth.conf\n")
    server = EmbeddedNats(store_dir=tmp_path / "js", config_file=tmp_path / "server.conf")
    server.start()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
        tool_nc = await nats.connect(server.url, allow_reconnect=False, **NatsAuth("tool", "pw-tool").connect_options())
        await ensure_streams(tool_nc.jetstream())
        await tool_nc.close()
        client = Client()
        nc = await client.connect(server.url, NatsAuth("connector-sms", "pw-connector-sms"))
        await nc.publish("rd.evt.a.ava", b"{}")
        await nc.jetstream().publish("rd.inbound.sms", b"{}", timeout=5)  # its own subject: stored
        await eventually(lambda: _true(client.denied("rd.evt.a.ava")))
        await nc.close()
        for user in ("connector-voice", "sink-zendesk", "sink-freshdesk"):  # the new users, their own passwords
            nc = await nats.connect(server.url, allow_reconnect=False, **NatsAuth(user, f"pw-{user}").connect_options())
            await nc.close()
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(
                    server.url, allow_reconnect=False, error_cb=_quiet, **NatsAuth(user, "pw-tool").connect_options()
                )
    finally:
        server.stop()


# -- `relaydesk up` itself, and the tools beside it -------------------------------------------------


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


async def test_up_refuses_anonymous_clients_and_tools_use_the_generated_tool_credentials(tmp_path: Path) -> None:
    from tests.integration.test_up_startup import up_env

    env = up_env(tmp_path)
    nats_url = f"nats://127.0.0.1:{env['RELAYDESK_NATS_PORT']}"
    proc = await asyncio.to_thread(_start_up, env)
    try:
        api = f"http://127.0.0.1:{env['RELAYDESK_API_PORT']}/healthz"
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: _answers(http, api, proc), timeout=60)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(nats_url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
        # Beside `up` (same data dir) a tool needs neither a URL nor credentials.
        status = await asyncio.to_thread(_run_cli, env, "status")
        assert status.returncode == 0, status.stderr
        assert "RD_EVENTS" in status.stdout and nats_url in status.stdout
        tools = {**env, "RELAYDESK_NATS_URL": nats_url}
        elsewhere = {**tools, "RELAYDESK_DATA_DIR": str(tmp_path / "elsewhere")}
        refused = await asyncio.to_thread(_run_cli, elsewhere, "status")
        assert refused.returncode == 1
        assert "refused the credentials" in refused.stderr, refused.stderr
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    data = tmp_path / "data"
    assert not (data / "nats-url").exists()  # a stopped `up` leaves tools no stale address
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    log = (data / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log.replace("Authorization Violation", ""), [
        line for line in log.splitlines() if "Violation" in line
    ]


def _start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _answers(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        stderr = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"relaydesk up exited with {proc.returncode}: {stderr[-3000:]}")
    try:
        async with http.get(url) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False
