"""IMAP poller: new mail in one mailbox becomes InboundMessages, each published once.

``(UIDVALIDITY, last UID)`` is kept in the ``rd_state`` KV bucket and advanced only after
JetStream acknowledged a message, so a restart neither re-publishes nor skips. Messages are
read with ``BODY.PEEK[]`` (their \\Seen flag is left alone) from a mailbox opened read-only.
Between polls the poller waits with IDLE where the server offers it. imapclient is blocking:
every call runs in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from imapclient import IMAPClient  # type: ignore[import-untyped]
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from connectors.sdk import Malformed, Unavailable
from events.skips import count_skip, skipping
from events.stopping import cancel_and_wait

from .settings import EmailSettings

log = structlog.get_logger("relaydesk.connector.email.imap")

# raw message -> what became of it: "published", "parked" (it could not be parsed) or
# "dropped" (our own mail come back); raises Unavailable (stop, retry later). Anything else
# is about that one mail.
Ingest = Callable[[bytes], Awaitable[str]]
# (first bytes of a mail over max_body_bytes, its size, its UID) -> the parked record's key;
# raises Unavailable.
ParkTooLarge = Callable[[bytes, int, int], Awaitable[str]]
FETCH_BATCH = 25
HEAD_BYTES = 64 * 1024  # what is read of a mail too large to take, to park it


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int
    last_uid: int
    at: float = 0.0  # unix time of the last update

    def encode(self) -> bytes:
        return json.dumps({"uidvalidity": self.uidvalidity, "last_uid": self.last_uid, "at": self.at}).encode()

    @classmethod
    def decode(cls, data: bytes) -> MailboxState:
        raw = json.loads(data)
        return cls(int(raw["uidvalidity"]), int(raw["last_uid"]), float(raw.get("at", 0.0)))


def state_key(settings: EmailSettings) -> str:
    """The KV key of this mailbox: a fingerprint, so no address stands in the key."""
    ident = f"{settings.imap_host}:{settings.imap_port}:{settings.imap_user}:{settings.imap_mailbox}"
    return "connector.email.imap." + hashlib.sha256(ident.encode()).hexdigest()[:24]


class ImapPoller:
    def __init__(self, settings: EmailSettings, kv: KeyValue, ingest: Ingest, park_too_large: ParkTooLarge) -> None:
        self.settings = settings
        self.kv = kv
        self.ingest = ingest
        self.park_too_large = park_too_large
        self.key = state_key(settings)
        self.client: IMAPClient | None = None
        self.state = "idle"
        self.last_error = ""
        self.published = 0
        # Mails that could not be parsed (stored raw) or were too large to take (their first
        # 64 KiB): parked, then passed.
        self.parked = 0
        self.dropped = 0  # our own mail come back (a mail loop): never a customer's
        self.skipped = 0  # mails that failed in a way nobody foresaw: logged and passed
        self.rounds = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="email-imap")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # A poll in progress may finish; past the IMAP timeout it is cancelled below, for sure.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self.settings.imap_timeout + 5)
            await cancel_and_wait(self._task)
            self._task = None
        await self._disconnect()
        self.state = "stopped"

    def poll_now(self) -> None:
        """Cut the current wait short (tests, or a push notification from elsewhere)."""
        self._wake.set()

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "rounds": self.rounds,
            "published": self.published,
            "parked": self.parked,
            "dropped": self.dropped,
            "skipped": self.skipped,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        pause = 1.0
        while not self._stopping:
            try:
                await self.poll_once()
                pause = 1.0
                self.last_error = ""
                await self._wait(self.settings.imap_poll_interval)
            except asyncio.CancelledError:
                break
            except Exception as err:
                self.state = "retrying"
                self.last_error = type(err).__name__
                log.warning("email.imap_failed", error=type(err).__name__)
                await self._disconnect()
                await self._sleep(pause)
                pause = min(pause * 2, max(self.settings.imap_poll_interval, 1.0))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _wait(self, seconds: float) -> None:
        client = self.client
        if client is None or not self.settings.imap_idle or b"IDLE" not in await asyncio.to_thread(client.capabilities):
            await self._sleep(seconds)
            return
        self.state = "idle-wait"
        self._wake.clear()
        await asyncio.to_thread(client.idle)
        try:
            deadline = time.monotonic() + min(seconds, 25 * 60)
            while not self._stopping and not self._wake.is_set() and time.monotonic() < deadline:
                responses = await asyncio.to_thread(client.idle_check, 1.0)
                if any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    break
        finally:
            await asyncio.to_thread(client.idle_done)

    # -- one poll ---------------------------------------------------------------------------

    async def _connect(self) -> IMAPClient:
        if self.client is not None:
            return self.client
        s = self.settings

        def connect() -> IMAPClient:
            client = IMAPClient(s.imap_host, port=s.imap_port, ssl=s.imap_ssl, timeout=s.imap_timeout)
            try:
                if s.imap_starttls and not s.imap_ssl:
                    client.starttls()
                client.login(s.imap_user, s.imap_password)
            except Exception:
                with skipping("email.imap_shutdown"):
                    client.shutdown()
                raise
            return client

        self.state = "connecting"
        self.client = await asyncio.to_thread(connect)
        log.info("email.imap_connected", mailbox=s.imap_mailbox)
        return self.client

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with skipping("email.imap_logout"):
                await asyncio.to_thread(client.logout)

    async def _load(self) -> MailboxState | None:
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return MailboxState.decode(entry.value)
        except (ValueError, KeyError):
            log.warning("email.imap_state_unreadable", key=self.key)
            return None

    async def _save(self, state: MailboxState) -> None:
        try:
            await self.kv.put(self.key, state.encode())
        except Exception as err:
            raise Unavailable(f"state not saved: {type(err).__name__}") from err

    async def _ingest_one(self, uid: int, raw: bytes) -> None:
        """One mail; only ``Unavailable`` (NATS away) stops the round. A mail that fails for
        what it is must never hold the mailbox: it is parked by ``ingest`` or, failing in a
        way nobody foresaw, logged, counted and passed (the state moves past its UID)."""
        try:
            outcome = await self.ingest(raw)
            if outcome == "published":
                self.published += 1
            elif outcome == "parked":
                self.parked += 1
            else:
                self.dropped += 1
        except Unavailable:
            raise
        except Malformed as err:
            self.skipped += 1
            count_skip("email.imap_mail")
            log.warning("email.imap_unparseable", uid=uid, reason=err.reason)
        except Exception as err:
            self.skipped += 1
            count_skip("email.imap_mail")
            log.warning("email.imap_mail_skipped", uid=uid, error=type(err).__name__)

    async def _too_large(self, client: IMAPClient, uid: int, size: int) -> None:
        """Not taken (as SMTP answers 552), but never lost silently: its first 64 KiB (the
        header section and the start of the body) are parked for an operator, then the
        mailbox goes on. NATS away: ``Unavailable``, the round is retried from this UID."""
        section = f"BODY.PEEK[]<0.{HEAD_BYTES}>"
        fetched = await asyncio.to_thread(client.fetch, [uid], [section])
        found = fetched.get(uid, {})
        head = next((v for k, v in found.items() if k.startswith(b"BODY[]") and isinstance(v, bytes)), b"")
        key = await self.park_too_large(head, size, uid)
        self.parked += 1
        log.warning("email.imap_too_large", uid=uid, size=size, parked=key)

    async def poll_once(self) -> int:
        """Publish every message newer than the saved state; returns how many were handled."""
        s = self.settings
        client = await self._connect()
        self.state = "polling"
        selected = await asyncio.to_thread(client.select_folder, s.imap_mailbox, True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT", 0) or 0)
        state = await self._load()
        since: datetime | None = None
        if state is None:
            if s.imap_start == "new":
                last = uidnext - 1 if uidnext else max(await asyncio.to_thread(client.search, ["ALL"]) or [0])
                await self._save(MailboxState(uidvalidity, last, time.time()))
                log.info("email.imap_start", mode="new", last_uid=last)
                self.rounds += 1
                return 0
            state = MailboxState(uidvalidity, 0, time.time())
        elif state.uidvalidity != uidvalidity:
            # The mailbox was rebuilt: UIDs mean nothing any more. Read again what arrived
            # since the last known state (a day's margin); dedupe by Message-ID absorbs repeats.
            log.warning("email.imap_uidvalidity_changed", old=state.uidvalidity, new=uidvalidity)
            since = datetime.fromtimestamp(state.at or 0, UTC) - timedelta(days=1)
            state = MailboxState(uidvalidity, 0, state.at)
        criteria: list[Any] = ["UID", f"{state.last_uid + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since.date()]
        uids = sorted(u for u in await asyncio.to_thread(client.search, criteria) if u > state.last_uid)
        handled = 0
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            sizes = await asyncio.to_thread(client.fetch, batch, ["RFC822.SIZE"])
            for uid in batch:
                if self._stopping:
                    return handled
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                if size > s.max_body_bytes:
                    await self._too_large(client, uid, size)
                else:
                    fetched = await asyncio.to_thread(client.fetch, [uid], ["BODY.PEEK[]"])
                    raw = fetched.get(uid, {}).get(b"BODY[]")
                    if raw:
                        await self._ingest_one(uid, bytes(raw))
                state = MailboxState(uidvalidity, uid, time.time())
                await self._save(state)
                handled += 1
        if since is not None and not uids:
            await self._save(MailboxState(uidvalidity, max(uidnext - 1, 0), time.time()))
        self.rounds += 1
        self.state = "running"
        return handled
