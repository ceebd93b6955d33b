"""A leader lease in the ``rd_leases`` KV bucket: one active instance, standbys wait.

Compare-and-set on the key's revision makes taking and renewing atomic; the holder's
expiry time lives in the value, so a standby takes over once the holder stops renewing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = structlog.get_logger(__name__)


class LeaseValue(msgspec.Struct):
    holder: str
    expires: float


class Lease:
    def __init__(
        self,
        kv: KeyValue,
        name: str,
        holder: str,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self._revision: int | None = None

    @property
    def held(self) -> bool:
        return self._revision is not None

    def _value(self) -> bytes:
        return msgspec.json.encode(LeaseValue(self.holder, self.clock() + self.ttl))

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or lapsed; renew it if we hold it."""
        try:
            entry = await self.kv.get(self.name)
        except KeyNotFoundError:
            entry = None
        try:
            if entry is None or entry.value is None:
                self._revision = await self.kv.create(self.name, self._value())
                log.info("lease.acquired", lease=self.name, holder=self.holder)
                return True
            current = msgspec.json.decode(entry.value, type=LeaseValue)
            if current.holder != self.holder and current.expires > self.clock():
                self._revision = None
                return False
            was_held = self.held
            self._revision = await self.kv.update(self.name, self._value(), last=entry.revision)
            if not was_held:
                log.info("lease.acquired", lease=self.name, holder=self.holder, previous=current.holder)
            return True
        except KeyWrongLastSequenceError:
            self._revision = None  # someone else got there first
            return False

    async def renew(self) -> bool:
        """Extend a held lease; False means we lost it and must stop acting as leader."""
        if self._revision is None:
            return False
        try:
            self._revision = await self.kv.update(self.name, self._value(), last=self._revision)
        except KeyWrongLastSequenceError:
            log.warning("lease.lost", lease=self.name, holder=self.holder)
            self._revision = None
            return False
        return True

    async def release(self) -> None:
        """Give the lease up at once, so a standby need not wait for it to lapse."""
        if self._revision is None:
            return
        expired = msgspec.json.encode(LeaseValue(self.holder, 0.0))
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.update(self.name, expired, last=self._revision)
        self._revision = None
        log.info("lease.released", lease=self.name, holder=self.holder)
