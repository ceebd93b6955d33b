"""A leader lease in the ``rd_leases`` KV bucket: one active instance, standbys wait.

Compare-and-set on the key's revision makes taking and renewing atomic. No two machines'
clocks are compared: a standby takes over once it has seen the same revision of another
holder's value for ``ttl`` on its own steady clock (the holder stopped renewing), and a
holder counts itself holder only for ``HOLD_SHARE`` of ``ttl`` after it sent its last
successful renewal, on its own. (The holder's wall-clock expiry in the value, which a standby
compared with its own wall clock, made two leaders when the standby's clock was ahead or
stepped forward, or the holder's behind, and no leader for as long as the holder's clock had
jumped ahead when it died. The value still carries it, for ``relaydesk status`` and for
standbys of earlier versions during an upgrade; 0 means released: take it at once.)

A holder is its name and a token of its own process: a lease under our name with another
token is another process's (one given the same instance id: it is said, ``lease.name_in_use``,
and this one stands by), or a previous run of ours, taken over once it lapses.

When NATS does not answer (a timeout, a lost connection, no responders, JetStream
unavailable) nobody can know who holds the lease: ``try_acquire`` and ``renew`` answer
False (not held, or unknown), the holder stands down, and the next call, once NATS is back,
takes the lease again if it is still ours or has lapsed. A blip is never an exception.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Final

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.bus.errors import NATS_ERRORS, NATS_UNAVAILABLE

log = structlog.get_logger(__name__)

# A holder acts for this share of ``ttl`` after sending a renewal that succeeded: it stops
# before a standby that saw that renewal can take over, clocks running a little apart.
HOLD_SHARE: Final = 0.8
_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", None)


def steady() -> float:
    """Seconds on a clock no NTP step or date change moves; on Linux one that also counts the
    time a suspended VM slept (``CLOCK_BOOTTIME``: ``time.monotonic`` stops meanwhile, and a
    resumed holder would act on a lease a standby took while it slept)."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


class LeaseValue(msgspec.Struct):
    holder: str
    expires: float
    # This process's own, apart from its name: two processes given one instance id (compose's
    # ``--scale router-a=2``, one ``[runner] instance_id`` in a shared config) each took the
    # other's lease as its own, and both led. Empty: written by an earlier version.
    token: str = ""


class Lease:
    def __init__(
        self,
        kv: KeyValue,
        name: str,
        holder: str,
        ttl: float = 5.0,
        clock: Callable[[], float] = steady,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.clock = clock  # this process's durations only: never compared with another's
        self.wall = wall  # the expiry written in the value, for display and older standbys
        self._revision: int | None = None
        self._valid_until = 0.0  # on ``clock``: when this holder stops counting on the lease
        self._seen: tuple[int | None, float] | None = None  # another holder's revision, first seen at (``clock``)
        self.unavailable = False  # the last call could not reach NATS
        self.token = uuid.uuid4().hex[:16]
        self._namesake: int | None = None  # a revision written under our name by another process
        self.namesake_running = False  # another process renews the lease under our name

    @property
    def held(self) -> bool:
        """Held, and renewed recently enough (on this process's own clock) that no standby may
        have taken it over: a holder stalled past that (a long pause, a suspended VM) is not."""
        return self._revision is not None and self.clock() < self._valid_until

    def _value(self) -> bytes:
        return msgspec.json.encode(LeaseValue(self.holder, self.wall() + self.ttl, self.token))

    def _ours(self, current: LeaseValue, revision: int | None) -> bool:
        """Written by this process (or, without a token, by an earlier version under our name:
        a restart of ours). Another process's under our name is another holder's, and said."""
        if current.holder != self.holder:
            return False
        if not current.token or current.token == self.token:
            return True
        if self._namesake is not None and self._namesake != revision and current.expires > 0:
            # Renewed since we last looked: it runs now, not a previous run of ours that died.
            if not self.namesake_running:
                log.error(
                    "lease.name_in_use",
                    lease=self.name,
                    holder=self.holder,
                    action="another process holds this lease under the same instance id; give each "
                    "process its own ([runner] instance_id, RELAYDESK_RUNNER_INSTANCE_ID, or leave it "
                    "unset for a random one): this one stands by until that one stops",
                )
            self.namesake_running = True
        self._namesake = revision
        return False

    def _hold_from(self, sent: float) -> None:
        self._seen = None
        self._valid_until = sent + self.ttl * HOLD_SHARE

    def _lapsed(self, current: LeaseValue, revision: int | None) -> bool:
        """Whether another holder's lease may be taken: released, or the same revision seen
        for ``ttl`` on this process's clock (its holder stopped renewing)."""
        if current.expires <= 0:
            return True
        now = self.clock()
        if self._seen is None or self._seen[0] != revision:
            self._seen = (revision, now)
        return now - self._seen[1] >= self.ttl

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
        sent = self.clock()
        try:
            try:
                entry = await self.kv.get(self.name)
            except KeyNotFoundError:
                entry = None
            if entry is None or entry.value is None:
                self._revision = await self.kv.create(self.name, self._value())
                self._hold_from(sent)
                self._reached()
                log.info("lease.acquired", lease=self.name, holder=self.holder)
                return self.held
            current = msgspec.json.decode(entry.value, type=LeaseValue)
            if not self._ours(current, entry.revision) and not self._lapsed(current, entry.revision):
                self._revision = None
                self._reached()
                return False
            was_held = self._revision is not None
            self._revision = await self.kv.update(self.name, self._value(), last=entry.revision)
            self._hold_from(sent)
            self._reached()
            if not was_held:
                log.info("lease.acquired", lease=self.name, holder=self.holder, previous=current.holder)
            return self.held
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
        sent = self.clock()
        try:
            self._revision = await self.kv.update(self.name, self._value(), last=self._revision)
            self._hold_from(sent)
        except KeyWrongLastSequenceError:
            log.warning("lease.lost", lease=self.name, holder=self.holder)
            self._revision = None
            self._reached()
            return False
        except NATS_ERRORS as err:
            return self._unreachable(err)
        self._reached()
        return self.held  # False: the renewal took longer than the lease is counted on

    async def release(self) -> None:
        """Give the lease up at once, so a standby need not wait for it to lapse."""
        if self._revision is None:
            return
        expired = msgspec.json.encode(LeaseValue(self.holder, 0.0))
        with contextlib.suppress(KeyWrongLastSequenceError, *NATS_UNAVAILABLE):
            await self.kv.update(self.name, expired, last=self._revision)
        self._revision = None
        log.info("lease.released", lease=self.name, holder=self.holder)
