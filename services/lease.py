"""A leader lease in the ``rd_leases`` KV bucket: one active instance, standbys wait.

Compare-and-set on the key's revision makes taking and renewing atomic; the holder's
expiry time lives in the value, so a standby takes over once the holder stops renewing.

When NATS does not answer (a timeout, a lost connection, no responders, JetStream
unavailable) nobody can know who holds the lease: ``try_acquire`` and ``renew`` answer
False (not held, or unknown), the holder stands down, and the next call, once NATS is back,
takes the lease again if it is still ours or has lapsed. A blip is never an exception.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.bus.errors import NATS_ERRORS, NATS_UNAVAILABLE

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
        self.unavailable = False  # the last call could not reach NATS

    @property
    def held(self) -> bool:
        return self._revision is not None

    def _value(self) -> bytes:
        return msgspec.json.encode(LeaseValue(self.holder, self.clock() + self.ttl))

    def forget(self) -> None:
        """Stop counting on the lease (we could not renew it, or could not act on it); the
        next ``try_acquire`` takes it again if it is still ours or has lapsed."""
        self._revision = None

    def _reached(self) -> None:
        if self.unavailable:
            self.unavailable = False
            log.info("lease.nats_back", lease=self.name, holder=self.holder)

    def _unreachable(self, err: BaseException) -> bool:
        if self.held or not self.unavailable:
            log.warning(
                "lease.unknown",
                lease=self.name,
                holder=self.holder,
                was_held=self.held,
                error=repr(err),
                action="not acting as holder until NATS answers again",
            )
        self.unavailable = True
        self._revision = None
        return False

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or lapsed; renew it if we hold it. False when another
        holder has it, or when NATS cannot tell."""
        try:
            try:
                entry = await self.kv.get(self.name)
            except KeyNotFoundError:
                entry = None
            if entry is None or entry.value is None:
                self._revision = await self.kv.create(self.name, self._value())
                self._reached()
                log.info("lease.acquired", lease=self.name, holder=self.holder)
                return True
            current = msgspec.json.decode(entry.value, type=LeaseValue)
            if current.holder != self.holder and current.expires > self.clock():
                self._revision = None
                self._reached()
                return False
            was_held = self.held
            self._revision = await self.kv.update(self.name, self._value(), last=entry.revision)
            self._reached()
            if not was_held:
                log.info("lease.acquired", lease=self.name, holder=self.holder, previous=current.holder)
            return True
        except KeyWrongLastSequenceError:
            self._revision = None  # someone else got there first
            self._reached()
            return False
        except NATS_ERRORS as err:
            return self._unreachable(err)

    async def renew(self) -> bool:
        """Extend a held lease; False means we lost it (or cannot tell) and must stop acting
        as leader."""
        if self._revision is None:
            return False
        try:
            self._revision = await self.kv.update(self.name, self._value(), last=self._revision)
        except KeyWrongLastSequenceError:
            log.warning("lease.lost", lease=self.name, holder=self.holder)
            self._revision = None
            self._reached()
            return False
        except NATS_ERRORS as err:
            return self._unreachable(err)
        self._reached()
        return True

    async def release(self) -> None:
        """Give the lease up at once, so a standby need not wait for it to lapse."""
        if self._revision is None:
            return
        expired = msgspec.json.encode(LeaseValue(self.holder, 0.0))
        with contextlib.suppress(KeyWrongLastSequenceError, *NATS_UNAVAILABLE):
            await self.kv.update(self.name, expired, last=self._revision)
        self._revision = None
        log.info("lease.released", lease=self.name, holder=self.holder)
