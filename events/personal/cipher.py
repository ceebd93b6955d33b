"""Sealing and opening the personal fields of events (see ``events.personal``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import msgspec
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.model import (
    DeliverReply,
    UnknownEvent,
)
from events.personal.box import (
    CLEAR_METADATA,
    ENVELOPE,
    ERASED,
    EXPIRED,
    NONCE_BYTES,
    Box,
    E,
    Fields,
    Transform,
    apply,
    clear_fields,
    envelope_day,
    has_envelope,
)
from events.personal.fields import PERSONAL_FIELDS
from events.personal.keys import PRELOAD_LIMIT, CustomerKeys
from events.skips import count_skip

log = structlog.get_logger(__name__)

__all__ = [
    "CLEAR_METADATA",
    "ENVELOPE",
    "ERASED",
    "EXPIRED",
    "NONCE_BYTES",
    "PERSONAL_FIELDS",
    "Fields",
    "PersonalDataCipher",
    "retention_cutoff",
]

ERASED_TAG = "customer_erased"
# Customers whose key is kept ready (an AESGCM object each) before the cache starts over.
BOX_CACHE = 200_000
# A batch needing this many uncached keys loads every key at once (CustomerKeys.preload).
PRELOAD_AT = 64
# A writer loads every key before its first seal when there are at most this many (about a
# second); a key it does not have is then new, and making it costs one request, not two.
SEAL_PRELOAD_LIMIT = 100_000
# Keys a batch (seal_many) reads or creates at once.
KEYS_IN_FLIGHT = 256


def clear_personal_fields(event: msgspec.Struct) -> list[str]:
    """Personal fields of ``event`` in clear (not sealed): destroying a key cannot erase them."""
    fields = PERSONAL_FIELDS.get(type(event))
    return clear_fields(event, fields) if fields is not None else []


def retention_cutoff(message_days: int, today: date | None = None) -> date:
    """The first day whose message bodies are kept with ``[retention] message_days``."""
    return (today or datetime.now(UTC).date()) - timedelta(days=message_days)


def _split(bodies: tuple[str, ...], for_bodies: Transform, for_others: Transform) -> Transform:
    def change(field: str, value: str) -> str:
        return for_bodies(field, value) if field in bodies else for_others(field, value)

    return change


def _day_of(event: msgspec.Struct) -> str:
    at: datetime = getattr(event, "at")  # noqa: B009 - every log event has one
    return f"d{at.astimezone(UTC):%Y%m%d}"


def _date_of(day: str) -> date:
    return date(int(day[1:5]), int(day[5:7]), int(day[7:9]))


def _customer_id(event: msgspec.Struct) -> str:
    value = getattr(event, "customer_id", None)
    if not isinstance(value, str):
        raise TypeError(f"{type(event).__name__} names no customer: it cannot be sealed")
    return value


class PersonalDataCipher:
    """Seals the personal fields of events with their customer's key, and opens them again.

    ``sealing=False`` (``[security] encrypt_personal_data = false``) writes clear values but
    still opens what earlier runs sealed."""

    def __init__(self, keys: CustomerKeys, *, sealing: bool = True, message_days: int = 0) -> None:
        self.keys = keys
        self.sealing = sealing
        self.message_days = message_days
        self._boxes: dict[str, Box] = {}  # customer -> their key at work (None inside: erased)
        self._day_boxes: dict[tuple[str, str], Box] = {}  # (customer, dYYYYMMDD) -> day key at work
        self._generation = keys.generation
        self._preloaded = False
        self._retired_before: date | None = None  # the retention cutoff day keys were dropped at

    def _aead(self, key: bytes | None) -> AESGCM | None:
        if key is None:
            return None
        if len(self._boxes) > BOX_CACHE or len(self._day_boxes) > BOX_CACHE:
            self._boxes.clear()
            self._day_boxes.clear()
        return AESGCM(key)

    async def seal(self, event: E) -> E:
        """``event`` with its personal fields sealed (unchanged if it has none, or sealing is off)."""
        fields = PERSONAL_FIELDS.get(type(event))
        if fields is None or not self.sealing:
            return event
        customer_id = _customer_id(event)
        box = self._box(customer_id)
        if box is None or box.aead is None:
            box = await self._sealing_box(customer_id)
        if self.message_days and fields.bodies:
            self._retire_days()
            day = _day_of(event)
            day_box = self._day_boxes.get((customer_id, day))
            if day_box is None or day_box.aead is None:
                key = await self.keys.get_or_create_day(customer_id, _date_of(day))
                day_box = self._day_boxes[(customer_id, day)] = Box(AESGCM(key), customer_id, day)
            return apply(event, fields, _split(fields.bodies, day_box.seal, box.seal), only_envelopes=False)
        return apply(event, fields, box.seal, only_envelopes=False)

    async def seal_many(self, events: Sequence[E]) -> list[E | Exception]:
        """``seal`` for a batch. The keys it lacks are read or created first, concurrently (a
        new customer costs one request, not one in line before their first append); then
        each event is sealed without a request. An event that cannot be sealed (its customer
        was erased: ``KeyDestroyed``; NATS away) has the exception in its place."""
        if not self.sealing:
            return list(events)
        missing: dict[str, None] = {}  # in order, once each
        for event in events:
            if type(event) in PERSONAL_FIELDS:
                customer_id = _customer_id(event)
                box = self._box(customer_id)
                if box is None or box.aead is None:
                    missing[customer_id] = None
        failed: dict[str, Exception] = {}
        if missing:
            if not self._preloaded:
                await self._preload(SEAL_PRELOAD_LIMIT)
            gate = asyncio.Semaphore(KEYS_IN_FLIGHT)

            async def make(customer_id: str) -> None:
                async with gate:
                    try:
                        await self._sealing_box(customer_id)
                    except Exception as err:  # raised by the caller in place of each of their events
                        log.warning("personal.seal_key_unavailable", customer_id=customer_id, error=repr(err))
                        count_skip("personal.seal_key")
                        failed[customer_id] = err

            await asyncio.gather(*(make(customer_id) for customer_id in missing))
        out: list[E | Exception] = []
        for event in events:
            fields = PERSONAL_FIELDS.get(type(event))
            if fields is None:
                out.append(event)
                continue
            customer_id = _customer_id(event)
            failure = failed.get(customer_id)
            if failure is not None:
                out.append(failure)
                continue
            box = self._box(customer_id)
            if box is not None and box.aead is not None and not (self.message_days and fields.bodies):
                out.append(apply(event, fields, box.seal, only_envelopes=False))
                continue
            try:  # a day key to make, or the cache started over meanwhile
                out.append(await self.seal(event))
            except Exception as err:  # raised by the caller in place of this event
                log.warning("personal.seal_failed", customer_id=customer_id, error=repr(err))
                count_skip("personal.seal")
                out.append(err)
        return out

    async def _sealing_box(self, customer_id: str) -> Box:
        """The customer's key, read or created now (``KeyDestroyed`` if they were erased)."""
        if not self._preloaded:
            await self._preload(SEAL_PRELOAD_LIMIT)
        box = Box(self._aead(await self.keys.get_or_create(customer_id)), customer_id)
        self._boxes[customer_id] = box
        return box

    async def open(self, event: E) -> E:
        """``event`` with its sealed fields opened; ``ERASED`` where the key is gone."""
        fields = PERSONAL_FIELDS.get(type(event))
        if fields is None:
            self._observe(event)
            return event
        opened = self._opened_now(event, fields)
        return self._past_retention(opened if opened is not None else await self._open_slowly(event, fields), fields)

    def _past_retention(self, event: E, fields: Fields) -> E:
        """With ``message_days``: the bodies of an event of a day before the cutoff read
        ``EXPIRED`` however they were written. A day key's are already; these are the ones
        written before retention was turned on (sealed with the customer's own key, which only
        an erasure destroys) or in clear (``encrypt_personal_data = false``), which every reader,
        a rebuild of the timelines too, gave back in full for ever."""
        if not (self.message_days and fields.bodies):
            return event
        at: datetime = getattr(event, "at")  # noqa: B009 - every log event has one
        if at.astimezone(UTC).date() >= self._retire_days():
            return event
        changes = {name: EXPIRED for name in fields.bodies if getattr(event, name) not in ("", ERASED, EXPIRED)}
        return msgspec.structs.replace(event, **changes) if changes else event

    def _opened_now(self, event: E, fields: Fields) -> E | None:
        """``event`` opened when that needs no request (its customer's box is cached, no day
        key): the common case of a replay. None: ``_open_slowly`` it."""
        box = self._box(_customer_id(event))
        if box is None:
            return None
        if box.aead is not None:  # erased: every envelope reads as such, day keys or not
            for name in fields.bodies:
                if envelope_day(getattr(event, name)):
                    return None
        return apply(event, fields, box.open, only_envelopes=True)

    async def _open_slowly(self, event: E, fields: Fields) -> E:
        customer_id = _customer_id(event)
        box = self._box(customer_id)
        if box is None:
            if not has_envelope(event, fields):
                return event  # clear values (an older log): no key needed
            box = Box(self._aead(await self.keys.get(customer_id)), customer_id)
            if self.keys.known(customer_id):  # a key, or a tombstone: not "not created yet"
                self._boxes[customer_id] = box
        for name in fields.bodies:
            day = envelope_day(getattr(event, name)) if box.aead is not None else ""  # erased: all of it
            if day:  # sealed with a day key ([retention] message_days)
                day_box = await self._day_box(customer_id, day)
                return apply(event, fields, _split(fields.bodies, day_box.open, box.open), only_envelopes=True)
        return apply(event, fields, box.open, only_envelopes=True)

    def _retire_days(self) -> date:
        """The retention cutoff; when it moved (once a day), the day keys before it are dropped
        from the caches (``CustomerKeys.forget_days_before``)."""
        cutoff = retention_cutoff(self.message_days)
        if cutoff != self._retired_before:
            self._retired_before = cutoff
            self._day_boxes = {at: box for at, box in self._day_boxes.items() if _date_of(at[1]) >= cutoff}
            self.keys.forget_days_before(cutoff)
        return cutoff

    async def _day_box(self, customer_id: str, day: str) -> Box:
        if self.message_days and _date_of(day) < self._retire_days():
            # Past retention: expired here even before the sweep destroys the key.
            return Box(None, customer_id, day, gone=EXPIRED)
        box = self._day_boxes.get((customer_id, day))
        if box is not None:
            return box
        key = await self.keys.get_day(customer_id, _date_of(day))
        box = Box(AESGCM(key) if key else None, customer_id, day, gone=EXPIRED)
        self._day_boxes[(customer_id, day)] = box
        return box

    async def _preload(self, limit: int) -> int:
        """Once per cipher: every key into the cache (``CustomerKeys.preload``), if not too many."""
        self._preloaded = True
        try:
            return await self.keys.preload(limit=limit)
        except Exception as err:  # NATS slow or the role may not: keys are then read one by one
            log.warning(
                "personal.preload_failed", error=repr(err), stream="RD_KEYS", skipped="loading every key at once"
            )
            count_skip("personal.preload")
            return 0

    def _box(self, customer_id: str) -> Box | None:
        """The customer's cached box, unless keys were forgotten or destroyed since."""
        if self._generation != self.keys.generation:
            self._boxes.clear()
            self._day_boxes.clear()
            self._generation = self.keys.generation
        return self._boxes.get(customer_id)

    async def open_many(self, events: Sequence[E]) -> list[E]:
        """``open`` for a batch (a replay): the keys it needs are fetched concurrently first,
        then every event whose key is at hand is opened without a request."""
        needed: set[str] = set()
        for event in events:
            fields = PERSONAL_FIELDS.get(type(event))
            if fields is not None:
                customer_id = _customer_id(event)
                if self._box(customer_id) is None and not self.keys.known(customer_id) and has_envelope(event, fields):
                    needed.add(customer_id)
        # A replay from the start (a rebuild, a service starting): every key at once.
        if len(needed) >= PRELOAD_AT and not self._preloaded and await self._preload(PRELOAD_LIMIT):
            needed = {customer_id for customer_id in needed if not self.keys.known(customer_id)}
        if needed:
            await asyncio.gather(*(self.keys.get(customer_id) for customer_id in needed))
        out: list[E] = []
        for event in events:
            fields = PERSONAL_FIELDS.get(type(event))
            if fields is None:
                self._observe(event)  # in order: a CustomerErased counts for what follows it
                out.append(event)
                continue
            opened = self._opened_now(event, fields)
            out.append(
                self._past_retention(opened if opened is not None else await self._open_slowly(event, fields), fields)
            )
        return out

    async def seal_reply(self, reply: DeliverReply) -> DeliverReply:
        return await self.seal(reply)

    async def open_reply(self, reply: DeliverReply) -> DeliverReply:
        return await self.open(reply)

    def _observe(self, event: msgspec.Struct) -> None:
        """A ``CustomerErased`` read from the log: drop the erased customers' cached keys."""
        if isinstance(event, UnknownEvent):
            if event.type != ERASED_TAG:
                return
            try:
                fact = msgspec.json.decode(event.raw, type=_ErasedIds)
            except msgspec.DecodeError as err:
                log.warning("personal.erased_fact_unreadable", error=type(err).__name__)
                return
            ids = [fact.customer_id, *fact.merged_ids]
        elif getattr(getattr(type(event), "__struct_config__", None), "tag", None) == ERASED_TAG:
            ids = [getattr(event, "customer_id", ""), *getattr(event, "merged_ids", ())]
        else:
            return
        for customer_id in ids:
            if customer_id:
                self.keys.forget(customer_id)


class _ErasedIds(msgspec.Struct, kw_only=True):
    customer_id: str = ""
    merged_ids: tuple[str, ...] = ()
