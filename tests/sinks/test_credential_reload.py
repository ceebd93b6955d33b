"""A token rotated in a secret file reaches a sink stalled on 401 without a restart.

The sink runs as ``relaydesk sink zendesk`` runs it (``runner.sink_service``) and as ``relaydesk
up`` runs it (``serve_all`` with ``runner.config_settings``), over a real nats-server, from a
real config file with its API token in a secret file named by
``RELAYDESK_SINK_ZENDESK_API_TOKEN_FILE`` (the Docker/Kubernetes secrets convention; Kubernetes
rewrites the file in place when the Secret changes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from connectors.sdk.conformance.helpers import conformance_nats
from events.model import ConversationResolved
from services.bootstrap import Bus, event_store
from services.config import load
from services.health import Health
from services.sinks.conformance import FakeTicket, Rig, eventually
from services.sinks.runner import config_settings, sink_service
from services.sinks.sdk import SinkRuntime
from services.up import serve_all

from .zendesk_fake import AGENTS, EMAIL, SECRET, TOKEN, FakeZendesk

pytestmark = pytest.mark.integration

EXPIRED = "zd-expired-token-4711"  # what the secret file holds at start; the fake wants TOKEN
TOKEN_FILE_VAR = "RELAYDESK_SINK_ZENDESK_API_TOKEN_FILE"


def write_config(path: Path, data_dir: Path, api_url: str) -> None:
    agents = ", ".join(f"{agent} = {user}" for agent, user in AGENTS.items())
    path.write_text(
        f"""
[data]
dir = "{data_dir}"

[health]
port = 0

[sinks.zendesk]
api_url = "{api_url}"
email = "{EMAIL}"
webhook_secret = "{SECRET}"
agents = {{ {agents} }}
start = "beginning"
api_backoff = 0.01
api_attempts = 2
retry_pause = 0.05
auth_retry_pause = 0.2
lease_seconds = 2.0
"""
    )


def rewrite(path: Path, text: str) -> None:
    """As Kubernetes updates a mounted Secret: the new content replaces the file at once."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


class Setup:
    def __init__(self, tmp_path: Path, fake: FakeZendesk, rig: Rig, config_file: Path, token_file: Path) -> None:
        self.tmp_path, self.fake, self.rig = tmp_path, fake, rig
        self.config_file, self.token_file = config_file, token_file

    async def stalled_conversation(self) -> tuple[str, str]:
        """A conversation assigned, a message, an agent's reply and the resolve, all waiting
        behind the assignment the helpdesk refused (401)."""
        customer, conversation = await self.rig.open_assigned("My invoice is wrong")
        await self.rig.message(customer, conversation, "hello?")
        await self.rig.agent_replies(customer, conversation, "Refund issued.")
        await self.rig.append(
            ConversationResolved(
                at=datetime.now(UTC),
                customer_id=customer,
                conversation_id=conversation,
                agent_id="ava",
                actor="agent:ava",
            )
        )
        await self.fake.wait_for(lambda: any(s.status == 401 for s in self.fake.seen))
        return customer, conversation

    async def synced(self, conversation: str) -> FakeTicket:
        async def done() -> FakeTicket | None:
            ticket = self.fake.ticket_of(conversation)
            return ticket if ticket is not None and ticket.status == "solved" else None

        return await eventually(done, timeout=30)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, health: Health | None = None
) -> AsyncIterator[Setup]:
    """The Zendesk sink started from a config file and a secret file, ``how`` ``relaydesk
    sink zendesk`` or ``relaydesk up`` start it."""
    fake = FakeZendesk()
    config_file, token_file = tmp_path / "relaydesk.toml", tmp_path / "secrets" / "zendesk-token"
    token_file.parent.mkdir()
    token_file.write_text(EXPIRED + "\n")
    monkeypatch.setenv(TOKEN_FILE_VAR, str(token_file))
    async with conformance_nats(tmp_path) as (server, nc):
        write_config(config_file, tmp_path / "data", await fake.start())
        config = load(config_file)
        stop = asyncio.Event()
        task: asyncio.Task[Any]
        if how == "sink":  # what `relaydesk sink zendesk --config FILE` runs (services.cli)
            job = sink_service(config_file, "zendesk")
            task = asyncio.create_task(job(config, Bus(nc, event_store(nc)), "zendesk", stop, health=health))
        else:  # what `relaydesk up --config FILE` runs (services.up.up), here with the sink alone
            settings = config_settings(config_file)
            task = asyncio.create_task(serve_all(config, server.url, "t", stop, services=(), sink_settings=settings))
        # Only the log helpers: the sink's runtime lives inside the task.
        rig = Rig(nc, event_store(nc), fake, cast(SinkRuntime, None), lambda: cast(Any, None))
        try:
            yield Setup(tmp_path, fake, rig, config_file, token_file)
            assert not task.done(), "the sink stopped (or was restarted)"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await fake.stop()


def secrets_in(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines holding either token, raw or as the Basic credentials sent."""
    marks = [EXPIRED, TOKEN]
    marks += [base64.b64encode(f"{EMAIL}/token:{t}".encode()).decode() for t in (EXPIRED, TOKEN)]
    return [line for line in lines if any(mark in repr(line) for mark in marks)]


def events_named(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name]


@pytest.mark.parametrize("how", ["sink", "up"])
async def test_a_token_rotated_in_the_secret_file_unblocks_the_stalled_sink_without_restart(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, log_lines: list[dict[str, Any]]
) -> None:
    async with running(tmp_path, how, monkeypatch) as setup:
        _, conversation = await setup.stalled_conversation()
        await eventually(lambda: _value(events_named(log_lines, "sink.auth_stalled")))
        assert setup.fake.ticket_of(conversation) is None

        rewrite(setup.token_file, TOKEN + "\n")  # the operator rotates the token in the Secret

        ticket = await setup.synced(conversation)
        assert [c.body for c in ticket.comments] == ["My invoice is wrong", "hello?", "Refund issued."]
        assert len(setup.fake.tickets_of(conversation)) == 1
    [reloaded] = events_named(log_lines, "sink.credentials_reloaded")
    assert reloaded["changed"] == ["api_token"]
    assert len(events_named(log_lines, "sink.started")) == 1, "the sink was restarted"
    assert events_named(log_lines, "sink.auth_recovered")
    assert secrets_in(log_lines) == []


async def test_the_health_port_is_not_ready_while_the_helpdesk_refuses_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Kubernetes probes (the health port's ``/readyz``) says what the sink README says of
    ``/readyz``: 503 while the helpdesk refuses the token, ready again once it works."""
    health = Health()
    async with running(tmp_path, "sink", monkeypatch, health=health) as setup:
        _, conversation = await setup.stalled_conversation()

        async def unready() -> dict[str, Any] | None:
            ok, detail = await health.run()
            return None if ok else detail["sink zendesk"]

        refused = await eventually(unready)
        assert refused["auth_failed"] and refused["reason"] == "the helpdesk refuses the sink's credentials"

        rewrite(setup.token_file, TOKEN + "\n")
        await setup.synced(conversation)

        async def ready() -> bool:
            ok, _ = await health.run()
            return ok

        await eventually(ready)


@pytest.mark.parametrize(
    ("breakage", "said"),
    [("secret file removed", TOKEN_FILE_VAR), ("config file not TOML", "not valid TOML")],
)
async def test_a_broken_reread_keeps_the_old_settings_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: list[dict[str, Any]], breakage: str, said: str
) -> None:
    async with running(tmp_path, "sink", monkeypatch) as setup:
        _, conversation = await setup.stalled_conversation()
        if breakage == "secret file removed":
            setup.token_file.unlink()
        else:
            setup.config_file.write_text("[sinks.zendesk\napi_url = ")
        failed = await eventually(lambda: _value(events_named(log_lines, "sink.credentials_reload_failed")))
        assert said in failed[0]["problem"], failed[0]
        assert setup.fake.ticket_of(conversation) is None

        # The helpdesk takes the old token again: the sink still has it, and everything flows.
        setup.fake.authorization = "Basic " + base64.b64encode(f"{EMAIL}/token:{EXPIRED}".encode()).decode()
        ticket = await setup.synced(conversation)
        assert [c.body for c in ticket.comments] == ["My invoice is wrong", "hello?", "Refund issued."]
    assert events_named(log_lines, "sink.credentials_reloaded") == []
    assert secrets_in(log_lines) == []


async def _value(value: Any) -> Any:
    return value
