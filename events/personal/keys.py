"""Per-customer data keys in the ``RD_KEYS`` stream (see ``events.personal``)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from events import subjects
from events.kv import stream_subjects
from events.raw_delivery import DirectReadRefused, direct_read_all
from events.skips import count_skip

log = structlog.get_logger(__name__)

KEYS_STREAM = "RD_KEYS"
KEYS_ALL = "rd.keys.>"
SYSTEM_SCOPE = "_system"
DAY_KEYS_ALL = "rd.keys.*.*"  # day keys (and system keys, which the sweep leaves alone)
_DAY_TOKEN = re.compile(r"^d[0-9]{8}$")
KEY_BYTES = 32
# A replay that needs many keys loads them all at once below this many (about 150 MB of cache).
PRELOAD_LIMIT = 1_000_000
PRELOAD_BATCH = 10_000  # keys per direct get (one round trip each)
_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = 10071


class KeyDestroyed(Exception):
    """The customer's key was destroyed (the customer was erased): nothing new is sealed for them."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"the data key of customer {customer_id} was destroyed")
        self.customer_id = customer_id


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One message on ``rd.keys.<customer>``: a key, or the tombstone of a destroyed one."""

    key: bytes = b""
    created_at: datetime | None = None
    destroyed_at: datetime | None = None


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(KeyRecord)


def key_subject(customer_id: str) -> str:
    return f"rd.keys.{subjects.token(customer_id)}"


def day_subject(customer_id: str, day: date) -> str:
    return f"{key_subject(customer_id)}.d{day:%Y%m%d}"


def system_key_subject(name: str) -> str:
    return f"rd.keys.{SYSTEM_SCOPE}.{subjects.token(name)}"


class CustomerKeys:
    """Per-customer data keys in the ``RD_KEYS`` stream (created by ``events.streams.ensure_streams``),
    with a process-local cache. ``None`` in the cache means "destroyed" (a tombstone was seen)."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self.js = js
        self.timeout = timeout
        self._cache: dict[str, bytes | None] = {}
        self._creating: dict[str, asyncio.Future[bytes]] = {}
        self._days: dict[str, set[str]] = {}  # customer -> cached day-key subjects
        # Moves on every forget/destroy: a cipher's per-customer shortcuts are then rebuilt.
        self.generation = 0
        # Every key that existed was loaded (preload): a key not cached is new, and creating
        # it skips the read (a key made by another process since is read on the conflict).
        self.preloaded = False

    # -- reading ------------------------------------------------------------------------

    async def get(self, customer_id: str) -> bytes | None:
        """The customer's key, or None when they have none or it was destroyed."""
        return await self._get(key_subject(customer_id))

    def known(self, customer_id: str) -> bool:
        """Whether the customer's key (or its destruction) is cached: ``get`` answers at once."""
        return key_subject(customer_id) in self._cache

    async def preload(self, *, limit: int = PRELOAD_LIMIT) -> int:
        """Every key and tombstone into the cache (batched direct gets; an ordered consumer
        where the server or nats-py cannot), if there are at most ``limit`` (a replay of the
        whole log then fetches none one by one). Returns how many were loaded (0 when there
        are more than ``limit``)."""
        info = await self.js.stream_info(KEYS_STREAM)
        total = int(info.state.messages)
        if total > limit:
            return 0
        self.preloaded = True  # (set first: a key made meanwhile is found on conflict anyway)
        if total == 0:
            return 0

        def take(subject: str, data: bytes) -> None:
            try:
                self._remember(subject, _record_decoder.decode(data))
            except msgspec.DecodeError as err:
                log.warning("keys.record_unreadable", subject=subject, error=type(err).__name__)
                count_skip("keys.record_unreadable")

        # Batched direct gets with messages straight from the parser: a few microseconds a key
        # where an ordered consumer's ``Msg`` and metadata took ~50.
        nc = getattr(self.js, "_nc", None)  # nats-py's JetStreamContext keeps its connection there
        try:
            read = None
            if nc is not None:
                read = await direct_read_all(nc, KEYS_STREAM, KEYS_ALL, take, timeout=self.timeout, batch=PRELOAD_BATCH)
        except DirectReadRefused as err:  # an older server: the ordered consumer below
            log.info("keys.direct_preload_refused", error=str(err), action="ordered consumer")
            read = None
        if read is not None:
            return read
        loaded = 0
        async for msg in self._each(KEYS_ALL):
            try:
                self._remember(msg.subject, _record_decoder.decode(msg.data))
                loaded += 1
            except msgspec.DecodeError as err:
                log.warning("keys.record_unreadable", subject=msg.subject, error=type(err).__name__)
        return loaded

    async def _each(self, filter_subject: str) -> AsyncIterator[Msg]:
        """Every message on ``filter_subject`` in RD_KEYS as it stands, through one ordered consumer."""
        sub = await self.js.subscribe(
            filter_subject,
            stream=KEYS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        try:
            info = await sub.consumer_info()
            # Empty when nothing is pending and nothing was pushed to us already.
            pending = info.num_pending or (info.delivered.consumer_seq if info.delivered else 0)
            while pending:
                msg = await sub.next_msg(timeout=self.timeout)
                yield msg
                pending = msg.metadata.num_pending
        finally:
            await sub.unsubscribe()

    async def _get(self, subject: str) -> bytes | None:
        if subject in self._cache:
            return self._cache[subject]
        # A direct get may be answered by a replica that has not seen a new key yet: a miss
        # is confirmed by the stream leader before the key counts as absent.
        record = await self._read(subject, direct=True) or await self._read(subject, direct=False)
        return self._remember(subject, record)

    def _remember(self, subject: str, record: KeyRecord | None) -> bytes | None:
        if record is None:
            return None  # not cached: another process may create it
        if record.destroyed_at is not None or not record.key:
            self._cache[subject] = None
            return None
        self._cache[subject] = record.key
        return record.key

    async def _read(self, subject: str, *, direct: bool) -> KeyRecord | None:
        try:
            raw = await self.js.get_last_msg(KEYS_STREAM, subject, direct=direct)
        except NotFoundError:
            return None
        if not raw.data:
            return None
        try:
            return _record_decoder.decode(raw.data)
        except msgspec.DecodeError as err:  # a damaged key reads as no key: its data as erased
            log.error("keys.record_unreadable", subject=subject, error=type(err).__name__)
            return None

    # -- creating -----------------------------------------------------------------------

    async def get_or_create(self, customer_id: str) -> bytes:
        """The customer's key, created now if they have none. Raises ``KeyDestroyed``."""
        key = await self._get_or_create(key_subject(customer_id))
        if key is None:
            raise KeyDestroyed(customer_id)
        return key

    async def system_key(self, name: str) -> bytes:
        """A key for Relaydesk itself (e.g. ``identity`` for HMACs of addresses), created once."""
        key = await self._get_or_create(system_key_subject(name))
        if key is None:
            raise KeyDestroyed(f"{SYSTEM_SCOPE}.{name}")
        return key

    async def _get_or_create(self, subject: str) -> bytes | None:
        if subject in self._cache:
            return self._cache[subject]
        pending = self._creating.get(subject)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._creating[subject] = future
        try:
            key = await self._create(subject)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as err:
            future.set_exception(err)
            future.exception()  # retrieved here: no "never retrieved" warning without waiters
            raise
        finally:
            self._creating.pop(subject, None)
        if key is None:
            future.set_exception(KeyDestroyed(subject))
            future.exception()
            return None
        future.set_result(key)
        return key

    async def _create(self, subject: str) -> bytes | None:
        if not self.preloaded:
            record = await self._read(subject, direct=True)
            if record is not None:
                return self._remember(subject, record)
        new = KeyRecord(key=os.urandom(KEY_BYTES), created_at=datetime.now(UTC))
        try:
            await self.js.publish(
                subject,
                _record_encoder.encode(new),
                stream=KEYS_STREAM,
                timeout=self.timeout,
                headers={_EXPECTED_LAST_SUBJECT_SEQ: "0"},
            )
        except APIError as err:
            if err.err_code != _WRONG_LAST_SEQUENCE:
                raise
            # Someone created it first (or destroyed it): theirs is the key.
            return self._remember(subject, await self._read(subject, direct=False))
        return self._remember(subject, new)

    async def find_system_key(self, name: str) -> bytes | None:
        """A system key made before by ``system_key``; None if there is none (never made, or erased)."""
        return await self._get(system_key_subject(name))

    async def system_key_names(self) -> list[str]:
        """The names of the system keys in ``RD_KEYS`` now (``system_key``)."""
        prefix = system_key_subject("x")[:-1]
        try:
            found = await stream_subjects(self.js, KEYS_STREAM, prefix + "*")
        except NotFoundError:
            return []
        return [subject.removeprefix(prefix) for subject in found]

    async def erase_system_key(self, name: str) -> bool:
        """Securely erase a system key made for one task (an erasure's job record), leaving no
        tombstone (the name is not used again). True if there was one."""
        subject = system_key_subject(name)
        erased = await self._erase(subject, tombstone=False)
        self._cache.pop(subject, None)
        self.generation += 1
        return erased

    # -- destroying ---------------------------------------------------------------------

    async def destroy(self, customer_id: str) -> bool:
        """Erase the customer's key (and their retention day keys) for good. True if a key
        was erased, False if there was none. The message is deleted with JetStream's secure
        erase (``$JS.API.STREAM.MSG.DELETE`` without ``no_erase``: the server overwrites the
        bytes on disk); a tombstone takes its place so that no new key is ever created."""
        subject = key_subject(customer_id)
        # The tombstone first: from then on no day key can be made for them (making one
        # needs the customer's key), so the list of day keys below is complete.
        erased = await self._erase(subject, tombstone=True)
        for day_subject in await self._day_subjects(customer_id):
            erased = await self._erase(day_subject, tombstone=False) or erased
        self.forget(customer_id)
        self._cache[subject] = None
        self.generation += 1
        log.info("keys.destroyed", customer_id=customer_id, erased=erased)
        return erased

    async def _erase(self, subject: str, *, tombstone: bool) -> bool:
        erased = False
        for _attempt in range(5):
            try:
                raw = await self.js.get_last_msg(KEYS_STREAM, subject)
            except NotFoundError:
                raw = None
            if raw is not None and raw.data:
                try:
                    tombstone_already = _record_decoder.decode(raw.data).destroyed_at is not None
                except msgspec.DecodeError:
                    tombstone_already = False  # damaged: erased like a key
                if tombstone_already:
                    return erased
                try:
                    await self.js.delete_msg(KEYS_STREAM, int(raw.seq or 0))
                    erased = True
                except APIError as err:  # erased by another process meanwhile: look again
                    log.info("keys.erase_raced", subject=subject, error=err.description or str(err))
                    continue
            if not tombstone:
                return erased
            marker = KeyRecord(destroyed_at=datetime.now(UTC))
            try:
                await self.js.publish(
                    subject,
                    _record_encoder.encode(marker),
                    stream=KEYS_STREAM,
                    timeout=self.timeout,
                    headers={_EXPECTED_LAST_SUBJECT_SEQ: "0"},
                )
                return erased
            except APIError as err:
                if err.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                # A key was created between the delete and the tombstone: erase it too.
        raise RuntimeError(f"{subject}: could not place the tombstone of a destroyed key")

    async def _day_subjects(self, customer_id: str) -> list[str]:
        """Subjects of the customer's retention day keys (``rd.keys.<customer>.d<yyyymmdd>``)."""
        try:
            return await stream_subjects(self.js, KEYS_STREAM, f"{key_subject(customer_id)}.>")
        except NotFoundError:
            return []

    # -- retention day keys (``[retention] message_days``) -----------------------------

    async def get_day(self, customer_id: str, day: date) -> bytes | None:
        """The customer's key for message bodies of ``day``; None once expired or erased."""
        subject = day_subject(customer_id, day)
        self._days.setdefault(customer_id, set()).add(subject)
        return await self._get(subject)

    async def get_or_create_day(self, customer_id: str, day: date) -> bytes:
        """The day key, created now if need be; only for a customer whose own key stands
        (raises ``KeyDestroyed`` for an erased one)."""
        await self.get_or_create(customer_id)
        subject = day_subject(customer_id, day)
        self._days.setdefault(customer_id, set()).add(subject)
        key = await self._get_or_create(subject)
        if key is None:
            raise KeyDestroyed(customer_id)
        return key

    async def expire_days(self, before: date) -> int:
        """Erase every day key of a day before ``before`` (the retention sweep): the message
        bodies sealed with them read as expired from then on. Returns how many it erased."""
        stream = await self.js.stream_info(KEYS_STREAM)
        if not stream.state.messages:
            return 0
        cutoff = f"d{before:%Y%m%d}"
        old: list[tuple[int, str]] = []
        async for msg in self._each(DAY_KEYS_ALL):
            day = msg.subject.rsplit(".", 1)[-1]
            if _DAY_TOKEN.match(day) and day < cutoff:
                old.append((int(msg.metadata.sequence.stream), msg.subject))
        erased = 0
        for seq, subject in old:
            try:
                await self.js.delete_msg(KEYS_STREAM, seq)  # a secure erase
                erased += 1
            except APIError as err:  # erased by another sweep meanwhile
                log.info("keys.expire_raced", subject=subject, error=err.description or str(err))
            self._cache.pop(subject, None)
        if erased:
            self.generation += 1
            log.info("keys.days_expired", erased=erased, before=before.isoformat())
        return erased

    def forget_days_before(self, before: date) -> int:
        """Drop the cached day keys of days before ``before`` (past retention, never used again
        here: the cipher reads those bodies as expired without a key). A long-running process
        sealed with one more key per customer and day and kept them all. Returns how many."""
        cutoff = f"d{before:%Y%m%d}"
        dropped = 0
        for customer_id in list(self._days):
            days = self._days[customer_id]
            old = [subject for subject in days if subject.rpartition(".")[2] < cutoff]
            for subject in old:
                days.discard(subject)
                self._cache.pop(subject, None)
            dropped += len(old)
            if not days:
                del self._days[customer_id]
        return dropped

    def forget(self, customer_id: str) -> None:
        """Drop the customer's cached keys (their day keys too): the next use reads RD_KEYS."""
        subject = key_subject(customer_id)
        self._cache.pop(subject, None)
        for day_subject in self._days.pop(customer_id, ()):
            self._cache.pop(day_subject, None)
        self.generation += 1
