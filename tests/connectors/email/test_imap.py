"""The IMAP poller against a real local IMAP server (pymap, in-memory backend) and a real
nats-server (the session's: outbound off)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from nats.aio.client import Client as NATS

from connectors.email.connector import EmailConnector
from connectors.email.imap import MailboxState, state_key
from connectors.sdk.conformance.helpers import read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.parking import ParkingLot

from .helpers import inbound_for, mail

pytestmark = pytest.mark.integration
USER, PASSWORD = "demouser", "demopass"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pymap_command() -> list[str] | None:
    exe = Path(sys.executable).with_name("pymap")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pymap")
    return [found] if found else None


@pytest.fixture(scope="module")
def imap_port() -> Iterator[int]:
    command = _pymap_command()
    if command is None:
        pytest.skip("pymap is not installed (pip install pymap): no local IMAP server to test against")
    port = _free_port()
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--no-tls", "dict", "--demo-data"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("pymap did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def append(port: int, raw: bytes, mailbox: str = "INBOX") -> None:
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as client:
        client.login(USER, PASSWORD)
        client.append(mailbox, raw)


def create(port: int, mailbox: str) -> None:
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as client:
        client.login(USER, PASSWORD)
        client.create_folder(mailbox)


def settings(port: int, mailbox: str, **extra: Any) -> dict[str, Any]:
    return {
        "port": 0,
        "smtp_enabled": False,
        "outbound": False,
        "domains": ["support.test"],
        "imap_host": "127.0.0.1",
        "imap_port": port,
        "imap_ssl": False,
        "imap_user": USER,
        "imap_password": PASSWORD,
        "imap_mailbox": mailbox,
        "imap_poll_interval": 0.2,
        "imap_idle": False,
        "imap_recipient": "help@support.test",
        **extra,
    }


@contextlib.asynccontextmanager
async def running(nc: NATS, raw: dict[str, Any]) -> AsyncIterator[EmailConnector]:
    connector = EmailConnector.from_config(raw)
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield connector
    finally:
        await runtime.stop()


async def rounds(connector: EmailConnector, n: int, timeout: float = 10.0) -> None:
    assert connector.imap is not None
    target = connector.imap.rounds + n
    async with asyncio.timeout(timeout):
        while connector.imap.rounds < target:
            connector.imap.poll_now()
            await asyncio.sleep(0.05)


async def saved_state(nc: NATS, raw: dict[str, Any]) -> MailboxState:
    kv = await nc.jetstream().key_value(subjects.STATE_BUCKET)
    entry = await kv.get(state_key(EmailConnector.from_config(raw).settings))
    assert entry.value
    return MailboxState.decode(entry.value)


async def test_new_mail_is_published_once_and_a_restart_does_not_republish(nc: NATS, imap_port: int) -> None:
    uid = uuid.uuid4().hex[:12]
    # pymap listens on a fresh port each run, so the state key (host:port:user:mailbox) is fresh too.
    raw = settings(imap_port, "INBOX")
    before = len(await read_inbound(nc.jetstream(), "email"))
    async with running(nc, raw) as connector:
        await rounds(connector, 1)  # first start: "new" = remember where the mailbox is
        state = await saved_state(nc, raw)
        await asyncio.to_thread(append, imap_port, mail(uid, n=1, to="help@support.test").as_bytes())
        [item] = await inbound_for(nc, f"{uid}.1@customer.test", wait=10)
        await rounds(connector, 2)
    m = item.message
    assert (m.sender, m.recipient, m.text) == ("ann@customer.test", "help@support.test", "Hello, my invoice is wrong.")
    assert m.metadata["source"] == "imap"
    after = await saved_state(nc, raw)
    assert after.uidvalidity == state.uidvalidity and after.last_uid == state.last_uid + 1

    # Restart: nothing again; then one more message is one more event.
    async with running(nc, raw) as connector:
        await rounds(connector, 3)
        assert len(await inbound_for(nc, f"{uid}.1@customer.test")) == 1
        await asyncio.to_thread(append, imap_port, mail(uid, n=2, to="help@support.test").as_bytes())
        assert len(await inbound_for(nc, f"{uid}.2@customer.test", wait=10)) == 1
        await rounds(connector, 2)
    # The demo mailbox's older messages were never published ("new" start).
    assert len(await read_inbound(nc.jetstream(), "email")) - before >= 2
    assert len(await inbound_for(nc, f"{uid}.1@customer.test")) == 1
    assert len(await inbound_for(nc, f"{uid}.2@customer.test")) == 1
    assert (await saved_state(nc, raw)).last_uid == state.last_uid + 2


async def test_idle_wakes_the_poller(nc: NATS, imap_port: int) -> None:
    uid = uuid.uuid4().hex[:12]
    raw = settings(imap_port, "Sent", imap_idle=True, imap_poll_interval=60.0)
    async with running(nc, raw) as connector:
        assert connector.imap is not None
        async with asyncio.timeout(10):
            while connector.imap.state != "idle-wait":
                await asyncio.sleep(0.05)
        await asyncio.to_thread(append, imap_port, mail(uid, to="help@support.test").as_bytes(), "Sent")
        # Well before the 60 s poll interval: IDLE told us.
        assert len(await inbound_for(nc, f"{uid}.0@customer.test", wait=8)) == 1


async def test_start_all_publishes_what_is_already_there(nc: NATS, imap_port: int) -> None:
    uid = uuid.uuid4().hex[:12]
    await asyncio.to_thread(create, imap_port, f"Box{uid}")
    await asyncio.to_thread(append, imap_port, mail(uid, to="x@elsewhere.test").as_bytes(), f"Box{uid}")
    raw = settings(imap_port, f"Box{uid}", imap_start="all")
    async with running(nc, raw) as connector:
        [item] = await inbound_for(nc, f"{uid}.0@customer.test", wait=10)
        await rounds(connector, 2)
    # No header names one of our domains: the mailbox's own address is the recipient.
    assert item.message.recipient == "help@support.test"
    assert len(await inbound_for(nc, f"{uid}.0@customer.test")) == 1


def recreate(port: int, mailbox: str) -> None:
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as client:
        client.login(USER, PASSWORD)
        client.delete_folder(mailbox)
        client.create_folder(mailbox)


async def test_uidvalidity_change_rescans_without_duplicates(nc: NATS, imap_port: int) -> None:
    uid = uuid.uuid4().hex[:12]
    box = f"Re{uid}"
    await asyncio.to_thread(create, imap_port, box)
    raw = settings(imap_port, box)
    first = mail(uid, n=1, to="help@support.test").as_bytes()
    async with running(nc, raw) as connector:
        await rounds(connector, 1)
        await asyncio.to_thread(append, imap_port, first, box)
        assert len(await inbound_for(nc, f"{uid}.1@customer.test", wait=10)) == 1
        await rounds(connector, 1)
    before = await saved_state(nc, raw)
    # The mailbox is rebuilt (new UIDVALIDITY) with the old message and a new one.
    await asyncio.to_thread(recreate, imap_port, box)
    await asyncio.to_thread(append, imap_port, first, box)
    await asyncio.to_thread(append, imap_port, mail(uid, n=2, to="help@support.test").as_bytes(), box)
    async with running(nc, raw) as connector:
        assert len(await inbound_for(nc, f"{uid}.2@customer.test", wait=10)) == 1
        await rounds(connector, 1)
    assert len(await inbound_for(nc, f"{uid}.1@customer.test")) == 1
    after = await saved_state(nc, raw)
    assert after.uidvalidity != before.uidvalidity


async def test_wrong_password_keeps_retrying_without_crashing(nc: NATS, imap_port: int) -> None:
    raw = settings(imap_port, "Trash", imap_password="wrong", imap_user="nobody")
    async with running(nc, raw) as connector:
        assert connector.imap is not None
        async with asyncio.timeout(10):
            while connector.imap.state != "retrying":
                await asyncio.sleep(0.05)
        assert connector.imap.last_error


async def test_a_mail_that_fails_is_parked_and_the_mailbox_goes_on(nc: NATS, imap_port: int) -> None:
    """Raw UTF-8 headers (which once failed every poll and held the mailbox) and a message with
    no header at all, before an ordinary one: all three are passed, the bad one parked."""
    uid = uuid.uuid4().hex[:12]
    mailbox = f"Parked{uid}"
    await asyncio.to_thread(create, imap_port, mailbox)
    utf8 = (
        f"From: Jürgen Müller <jm@customer.test>\r\nTo: help@support.test\r\nSubject: Grüße\r\n"
        f"Message-ID: <{uid}.0@customer.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n"
    ).encode()
    junk = f"this is no mail {uid}, no header at all\r\n".encode()
    for raw in (utf8, junk, mail(uid, n=2, to="help@support.test").as_bytes()):
        await asyncio.to_thread(append, imap_port, raw, mailbox)
    async with running(nc, settings(imap_port, mailbox, imap_start="all")) as connector:
        [first] = await inbound_for(nc, f"{uid}.0@customer.test", wait=10)
        assert len(await inbound_for(nc, f"{uid}.2@customer.test", wait=10)) == 1
        await rounds(connector, 1)
        assert connector.imap is not None
        health = connector.imap.health()
    assert first.message.sender_name == "Jürgen Müller" and first.message.text == "Grüße"
    assert (health["published"], health["parked"], health["skipped"]) == (2, 1, 0)


async def test_an_oversize_mail_is_parked_with_its_head_and_the_mailbox_goes_on(nc: NATS, imap_port: int) -> None:
    """Over max_body_bytes: not taken (SMTP would answer 552), but parked with its header
    section and first 64 KiB, counted, and passed; the next mail is published."""
    uid = uuid.uuid4().hex[:12]
    mailbox = f"Big{uid}"
    await asyncio.to_thread(create, imap_port, mailbox)
    big = mail(uid, n=1, to="help@support.test", subject=f"Big {uid}", text="x" * 100 + "\n" + "y" * 200_000)
    await asyncio.to_thread(append, imap_port, big.as_bytes(), mailbox)
    await asyncio.to_thread(append, imap_port, mail(uid, n=2, to="help@support.test").as_bytes(), mailbox)
    raw = settings(imap_port, mailbox, imap_start="all", max_body_bytes=100_000)
    async with running(nc, raw) as connector:
        assert len(await inbound_for(nc, f"{uid}.2@customer.test", wait=10)) == 1
        await rounds(connector, 1)
        assert connector.imap is not None
        health = connector.imap.health()
        assert connector.metrics.rejected_by_reason["too_large"] == 1
    assert await inbound_for(nc, f"{uid}.1@customer.test") == []
    assert (health["published"], health["parked"], health["skipped"]) == (1, 1, 0)
    parked = [r for r in await ParkingLot(nc.jetstream()).list() if r.data and f"Big {uid}".encode() in r.data[:2000]]
    [record] = parked
    assert record.reader == "connector:email" and record.error.startswith("too large:")
    assert len(record.data) == 64 * 1024 and record.data.startswith(b"From: Ann Example")
    assert int(record.headers["Relaydesk-Raw-Size"]) > 100_000 and record.headers["Relaydesk-Source"] == "imap"
    assert (await saved_state(nc, raw)).last_uid >= 2  # moved past both


async def test_our_own_mail_in_the_mailbox_is_not_published(nc: NATS, imap_port: int) -> None:
    """A journalled mailbox holds the replies Relaydesk sent: they are passed, not customers."""
    uid = uuid.uuid4().hex[:12]
    mailbox = f"Journal{uid}"
    await asyncio.to_thread(create, imap_port, mailbox)
    ours = mail(uid, n=1, to="ann@customer.test")
    del ours["From"], ours["Message-ID"]
    ours["From"] = "Acme Support <support@support.test>"
    ours["Message-ID"] = f"<rd.rep_{uid}@support.test>"
    await asyncio.to_thread(append, imap_port, ours.as_bytes(), mailbox)
    await asyncio.to_thread(append, imap_port, mail(uid, n=2, to="help@support.test").as_bytes(), mailbox)
    raw = settings(imap_port, mailbox, imap_start="all", from_address="support@support.test")
    async with running(nc, raw) as connector:
        assert len(await inbound_for(nc, f"{uid}.2@customer.test", wait=10)) == 1
        await rounds(connector, 1)
        assert connector.imap is not None
        health = connector.imap.health()
    assert await inbound_for(nc, f"rd.rep_{uid}@support.test") == []
    assert (health["published"], health["dropped"], health["parked"]) == (1, 1, 0)
