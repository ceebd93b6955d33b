"""deploy/compose.yaml, run as local processes (no Docker engine here): the same three NATS
nodes, ``setup``, every service with the command, environment and secrets compose gives it.
An SMS, an email and a chat message each reach an agent; then the NATS node leading the log
(``RD_EVENTS``) is killed, and a second SMS still routes and the chat still answers; last, a
Twilio Voice call (connector-voice) reaches an agent. The optional helpdesk sinks (compose
profiles) are not started, as ``docker compose up`` does not start them."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import nats
import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.deploy.compose_run import ComposeRun

pytestmark = pytest.mark.integration
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"  # the local server, trust auth
T = TypeVar("T")
ROUTED = ("offered", "assigned")
AGENTS = ("ava", "bruno")
# What an operator puts in deploy/.env: compose interpolates them into the services' settings.
VARIABLES = {
    "RELAYDESK_EMAIL_DOMAINS": "help.example.test",
    "RELAYDESK_CHAT_ALLOWED_ORIGINS": "https://shop.example.test",
}


@contextlib.contextmanager
def database(dsn: str, name: str) -> Iterator[None]:
    """A fresh database ``name`` on the server of ``dsn`` (the admin connection), dropped after."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_unreachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as err:
        return f"PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is unreachable: {err}"


async def eventually(what: str, attempt: Callable[[], Awaitable[T | None]], timeout: float = 60.0) -> T:
    """``attempt()`` until it returns something other than None, or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await attempt()
            if result is not None:
                return result
        except (aiohttp.ClientError, OSError, TimeoutError, nats.errors.Error) as err:
            last = err  # a service between NATS nodes, or not listening yet: try again
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last!r})")


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Signed by Twilio's own library, not the connector's code under test."""
    return str(RequestValidator(token).compute_signature(url, params))


class Smoke:
    def __init__(self, run: ComposeRun, http: aiohttp.ClientSession) -> None:
        self.run, self.http = run, http
        self.api = run.url("api", 8080)
        token = run.setting("api", "RELAYDESK_API_TOKEN")
        assert token, "compose gives the api no operator token"
        self.auth = {"Authorization": f"Bearer {token}"}

    async def register_agents(self) -> None:
        """A fresh deployment has no roster (only ``relaydesk up`` seeds one): the operator
        registers agents through the API, as on a real first day."""
        profile = {
            "skills": {"general": 3, "billing": 3, "technical": 3},
            "languages": {"en": 5, "es": 5},
            "tier": 1,
            "capacity": {"sms": 5, "chat": 5, "email": 5, "voice": 1},
        }
        for agent in AGENTS:

            async def put(agent: str = agent) -> bool | None:
                async with self.http.put(f"{self.api}/v1/agents/{agent}", json=profile, headers=self.auth) as resp:
                    if resp.status not in (200, 201):
                        return None
                status = {"status": "available"}
                async with self.http.post(f"{self.api}/v1/agents/{agent}/status", json=status, headers=self.auth) as r:
                    return True if r.status == 200 else None

            await eventually(f"agent {agent} registered", put)

    async def routed(self, identity: str, timeout: float = 60.0) -> dict[str, Any]:
        """The open conversation of the customer with ``identity``, once offered or assigned."""

        async def customer() -> str | None:
            url = f"{self.api}/v1/customers?{urlencode({'identity': identity})}"
            async with self.http.get(url, headers=self.auth) as resp:
                return str((await resp.json())["customers"][0]["customer_id"]) if resp.status == 200 else None

        customer_id = await eventually(f"customer {identity} known to the API", customer, timeout)
        return await self.conversation(lambda c: c["customer_id"] == customer_id, identity, timeout)

    async def conversation(self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> dict[str, Any]:
        async def find() -> dict[str, Any] | None:
            async with self.http.get(f"{self.api}/v1/conversations", headers=self.auth) as resp:
                if resp.status != 200:
                    return None
                found = [c for c in (await resp.json())["conversations"] if match(c)]
            return next((c for c in found if c["status"] in ROUTED and c["agent_id"] in AGENTS), None)

        return await eventually(f"a conversation for {what} offered or assigned to an agent", find, timeout)

    async def sms(self, sender: str, body: str, timeout: float = 60.0) -> None:
        """A webhook signed as Twilio signs it, sent again on a 5xx as Twilio retries."""
        token = self.run.setting("connector-sms", "RELAYDESK_TWILIO_AUTH_TOKEN")
        assert token, "compose gives connector-sms no Twilio auth token"
        base = self.run.url("connector-sms", 8081)
        public = self.run.setting("connector-sms", "RELAYDESK_CONNECTOR_SMS_PUBLIC_BASE_URL")
        sid = "SM" + uuid.uuid4().hex
        params = {"MessageSid": sid, "AccountSid": "AC" + "1" * 32, "From": sender, "To": "+15557654321"}
        params |= {"Body": body, "NumMedia": "0"}
        signature = twilio_signature(token, (public or base).rstrip("/") + "/twilio/sms", params)
        headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}

        async def post() -> bool | None:
            async with self.http.post(f"{base}/twilio/sms", data=urlencode(params), headers=headers) as resp:
                assert resp.status < 400 or resp.status >= 500, f"SMS refused: {resp.status} {await resp.text()}"
                return True if resp.status == 200 else None

        await eventually(f"SMS from {sender} accepted", post, timeout)

    async def call(self, caller: str, timeout: float = 60.0) -> str:
        """A Twilio Voice call webhook, signed with the token compose gives connector-voice: the
        caller is queued (``<Enqueue>``) once the call is safe in JetStream. Its CallSid."""
        token = self.run.setting("connector-voice", "RELAYDESK_CONNECTOR_VOICE_AUTH_TOKEN")
        assert token, "compose gives connector-voice no Twilio auth token"
        base = self.run.url("connector-voice", 8086)
        public = self.run.setting("connector-voice", "RELAYDESK_CONNECTOR_VOICE_PUBLIC_BASE_URL")
        sid = "CA" + uuid.uuid4().hex
        params = {"CallSid": sid, "AccountSid": "AC" + "1" * 32, "From": caller, "To": "+15557654321"}
        params |= {"CallStatus": "ringing", "Direction": "inbound"}
        signature = twilio_signature(token, (public or base).rstrip("/") + "/twilio/voice", params)
        headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}

        async def post() -> bool | None:
            async with self.http.post(f"{base}/twilio/voice", data=urlencode(params), headers=headers) as resp:
                assert resp.status < 400 or resp.status >= 500, f"call refused: {resp.status} {await resp.text()}"
                if resp.status != 200:
                    return None
                assert "<Enqueue" in await resp.text(), "the caller is not put in the queue"
                return True

        await eventually(f"call from {caller} queued", post, timeout)
        return sid

    async def email(self, sender: str, subject: str, body: str, timeout: float = 60.0) -> None:
        """SMTP to the published port, sent again after a 4xx as a mail server would."""
        domains = self.run.setting("connector-email", "RELAYDESK_CONNECTOR_EMAIL_DOMAINS") or "localhost"
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, f"support@{domains.split(',')[0]}", subject
        message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
        message.set_content(body)
        port = self.run.services["connector-email"].ports[2525]

        def send() -> bool | None:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    refused = client.send_message(message)
            except smtplib.SMTPResponseException as err:
                assert 400 <= err.smtp_code < 500, f"mail refused: {err.smtp_code} {err.smtp_error!r}"
                return None  # a temporary failure (451: NATS did not ack): send again
            assert not refused, refused
            return True

        await eventually(f"mail from {sender} accepted", lambda: asyncio.to_thread(send), timeout)

    async def chat(self, visitor_id: str | None, text: str, timeout: float = 60.0) -> tuple[str, int, int]:
        """A session (resumed with ``visitor_id``) and a message over HTTP, both 2xx: the
        visitor id, the session's ``last_seq`` (its history in RD_CHAT) and the message's seq."""
        base = self.run.url("connector-chat", 8083)
        key = self.run.setting("connector-chat", "RELAYDESK_CONNECTOR_CHAT_WIDGET_KEY")
        body = {"widget_key": key, **({"visitor_id": visitor_id} if visitor_id else {})}
        # The embedding site's origin, as compose allows it (else the connector's own page).
        allowed = self.run.setting("connector-chat", "RELAYDESK_CONNECTOR_CHAT_ALLOWED_ORIGINS")
        origin = (allowed or base).split(",")[0].strip()

        async def session() -> dict[str, Any] | None:
            async with self.http.post(f"{base}/sessions", json=body, headers={"Origin": origin}) as resp:
                assert resp.status < 400 or resp.status >= 500, f"chat session refused: {resp.status}"
                return dict(await resp.json()) if resp.status == 200 else None

        opened = await eventually("a chat session", session, timeout)
        message = {"client_msg_id": uuid.uuid4().hex, "text": text}
        bearer = {"Authorization": f"Bearer {opened['token']}", "Origin": origin}

        async def send() -> int | None:
            async with self.http.post(f"{base}/messages", json=message, headers=bearer) as resp:
                assert resp.status < 400 or resp.status >= 500, f"chat message refused: {resp.status}"
                return int((await resp.json())["seq"]) if resp.status == 200 else None

        seq = await eventually("a chat message accepted", send, timeout)
        return str(opened["visitor_id"]), int(opened["last_seq"]), seq

    async def events_leader(self) -> str:
        """The compose service (NATS node) that leads the RD_EVENTS stream."""
        servers = [self.run.url(n, 4222, "nats") for n, s in self.run.services.items() if s.nats]
        password = self.run.setting("setup", "RELAYDESK_NATS_PASSWORD")
        nc = await nats.connect(servers, user="tool", password=password, connect_timeout=5)
        try:
            info = await nc.jetstream().stream_info("RD_EVENTS")
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader, "RD_EVENTS has no cluster leader"
        assert info.config.num_replicas == 3, f"RD_EVENTS has {info.config.num_replicas} replicas, not 3"
        return str(info.cluster.leader)


async def scenario(run: ComposeRun) -> None:
    started = time.monotonic()

    def phase(text: str) -> None:  # in the captured output of a failure: how far it got, when
        print(f"[{time.monotonic() - started:6.1f} s] {text}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        smoke = Smoke(run, http)
        await smoke.register_agents()
        phase("agents registered")

        await smoke.sms("+15551230001", "Hello, I need help with my invoice")
        first = await smoke.routed("sms:+15551230001")
        assert first["channel"] == "sms"
        phase(f"SMS routed: {first['status']} to {first['agent_id']}")

        await smoke.email("ann@example.com", "Refund", "Please refund my last invoice.")
        mail = await smoke.routed("email:ann@example.com")
        assert mail["channel"] == "email"
        phase(f"email routed: {mail['status']} to {mail['agent_id']}")

        visitor, _, first_seq = await smoke.chat(None, "Hi, my login fails")
        chat = await smoke.conversation(lambda c: c["channel"] == "chat", "the chat visitor", 60)
        phase(f"chat routed: {chat['status']} to {chat['agent_id']}")

        leader = await smoke.events_leader()
        victim = leader if leader in run.services else "nats-1"
        run.kill(victim)
        phase(f"killed {victim} (the RD_EVENTS leader was {leader})")

        await smoke.sms("+15551230002", "Hello again, a billing question", timeout=90)
        second = await smoke.routed("sms:+15551230002", timeout=90)
        assert second["id"] != first["id"]
        phase(f"second SMS routed: {second['status']} to {second['agent_id']}")
        _, history_end, _ = await smoke.chat(visitor, "Still there?", timeout=90)
        assert history_end >= first_seq, "the resumed chat session lost the visitor's history"
        phase("chat session resumed and a message accepted")
        # No process died with the node (Docker would restart it; here that is a failure), and
        # every one answers /readyz again (the two NATS nodes left: with a meta leader).
        running = [name for name, s in run.services.items() if name != victim and s.cmd != ["setup"]]
        await asyncio.to_thread(run.wait, running, 90)
        phase("every service ready again")

        # Last: an agent on a call takes no other work (the cross-channel rule).
        await smoke.call("+15551230003")
        call = await smoke.conversation(lambda c: c["channel"] == "voice", "the caller", 60)
        phase(f"call routed: {call['status']} to {call['agent_id']}")


async def test_compose_runs_routes_every_channel_and_survives_a_nats_node(tmp_path: Path) -> None:
    reason = postgres_unreachable()
    if reason:
        pytest.skip(reason)
    run = ComposeRun(tmp_path, VARIABLES)
    try:
        with database(PG_ADMIN, run.database):
            try:
                # On this thread, not a worker's: the children die with the thread that
                # started them (PR_SET_PDEATHSIG), and this one lives as long as the test.
                run.up()
                await scenario(run)
            except BaseException:
                # Diagnosable from CI output alone: every service's last lines.
                print(run.tails(), f"\ncompose problems: {run.problems}", sep="\n")
                raise
            finally:
                run.down()  # before the database is dropped
    finally:
        run.down()
    assert run.problems == [], "compose settings that would not work in Docker:\n" + "\n".join(run.problems)
