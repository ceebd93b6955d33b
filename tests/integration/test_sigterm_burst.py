"""SIGTERM during a burst loses nothing.

An orchestrator stops containers with SIGTERM (a rolling update, a node drained). Here a
real ``relaydesk connector sms`` and a real ``relaydesk intake`` take a burst of signed
webhooks and both get SIGTERM in the middle of it. Each must stop on its own (exit 0, no
SIGKILL needed); Twilio retries every webhook that was not answered 2xx, as the test does
once both are back. In the end every message is on the log exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS
from twilio.request_validator import RequestValidator

from events import subjects
from events.model import MessageReceived
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import eventually

pytestmark = pytest.mark.integration

AUTH_TOKEN = "sigterm-test-token"
MESSAGES = 240
CONCURRENCY = 24


class Service:
    """One ``relaydesk <args>`` process with its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def terminate(self) -> int:
        """SIGTERM, then wait (without blocking the loop) for the process to stop by itself."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        proc = self.proc

        async def exited() -> bool:
            return proc.poll() is not None

        try:
            await eventually(exited, timeout=30, every=0.1)
        except AssertionError:
            proc.kill()
            raise AssertionError(f"{self.args} ignored SIGTERM for 30 s:\n{self.log()}") from None
        self.proc = None
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
async def server(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[NATS, EventStore]]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    yield nc, EventStore(nc, nc.jetstream())
    await nc.drain()


def _env(nats_url: str, tmp_path: Path, sms_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RELAYDESK_NATS_URL": nats_url,
        "RELAYDESK_DATA_DIR": str(tmp_path / "data"),
        "RELAYDESK_LOG_FORMAT": "json",
        "RELAYDESK_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "RELAYDESK_CONNECTOR_SMS_PORT": str(sms_port),
        "RELAYDESK_HEALTH_PORT": "0",
    }


async def test_sigterm_of_connector_and_intake_during_a_burst_loses_nothing(
    server: tuple[NATS, EventStore], clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    _, store = server
    port = free_port()
    env = _env(clean_nats.url, tmp_path, port)
    connector = Service(["connector", "sms"], env, tmp_path / "sms.log")
    intake = Service(["intake"], env, tmp_path / "intake.log")
    url = f"http://127.0.0.1:{port}/twilio/sms"
    validator = RequestValidator(AUTH_TOKEN)
    answered: dict[str, int] = {}

    async def post(http: aiohttp.ClientSession, n: int) -> None:
        params = {
            "MessageSid": f"SMterm{n:05d}",
            "AccountSid": "AC" + "0" * 32,
            "From": f"+1555{n:07d}",
            "To": "+15557654321",
            "Body": f"burst message {n}",
            "NumMedia": "0",
        }
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        try:
            async with http.post(url, data=params, headers=headers) as r:
                answered[params["MessageSid"]] = r.status
        except aiohttp.ClientError:
            answered[params["MessageSid"]] = 0  # refused or cut: Twilio retries it

    async def ready() -> bool:
        for service in (connector, intake):
            assert service.proc is not None and service.proc.poll() is None, service.log()
        if '"intake.started"' not in intake.log_path.read_text(errors="replace"):
            return False
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    async def burst(numbers: list[int]) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
            await asyncio.gather(*(post(http, n) for n in numbers))

    try:
        connector.start()
        intake.start()
        await eventually(ready, timeout=60, every=0.2)

        sending = asyncio.create_task(burst(list(range(MESSAGES))))

        async def underway() -> bool:
            return len(answered) >= MESSAGES // 4

        await eventually(underway, timeout=60, every=0.01)
        codes = await asyncio.gather(connector.terminate(), intake.terminate())
        await sending
        assert codes == [0, 0], (codes, connector.log(), intake.log())

        # Back again (a new container); the provider retries what was not answered 2xx.
        intake.log_path.write_text("")
        connector.start()
        intake.start()
        await eventually(ready, timeout=60, every=0.2)
        retry = [n for n in range(MESSAGES) if answered.get(f"SMterm{n:05d}") != 200]
        assert retry, "the burst ended before SIGTERM: the test proved nothing"
        await burst(retry)
        assert all(answered[f"SMterm{n:05d}"] == 200 for n in range(MESSAGES)), Counter(answered.values())

        async def recorded() -> Counter[str] | None:
            seen: Counter[str] = Counter()
            for stored in await store.read(subjects.CUSTOMER_EVENTS_ALL):
                if isinstance(stored.event, MessageReceived):
                    seen[stored.event.provider_message_id] += 1
            return seen if len(seen) == MESSAGES else None

        # What intake held unacknowledged at SIGTERM comes back after the consumer's ack wait.
        seen = await eventually(recorded, timeout=120, every=1.0)
        assert set(seen) == {f"SMterm{n:05d}" for n in range(MESSAGES)}
        assert max(seen.values()) == 1, [sid for sid, n in seen.items() if n > 1]
    finally:
        connector.kill()
        intake.kill()
