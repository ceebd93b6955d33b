"""The records of ``Idempotency-Key`` commands (``services.api.idempotency``) and the claims
an API process let go of while NATS did not answer, settled once it answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.skips import count_skip
from services.bus.errors import NATS_UNAVAILABLE

log = structlog.get_logger("services.api.idempotency")

# A record still "running" after this long belongs to a request whose API process died.
STALE_AFTER = 120.0
# How often records this process could not settle are tried again (``Abandoned``).
SETTLE_EVERY_S = 2.0


class Record(msgspec.Struct, kw_only=True):
    state: Literal["running", "done"]
    fingerprint: str
    started_at: float
    status: int = 0
    body: bytes = b""  # sealed: nonce + AES-GCM ciphertext (``services.api.idempotency.Sealer``)
    content_type: str = ""
    # The ids the command named (its path, its body's and its answer's ``id``/``*_id``/``*_ids``
    # fields), in clear: how an erasure finds the answers about a customer it cannot open.
    refs: list[str] = []
    # Which claim wrote it (random): how its process knows a record it let go (``Abandoned``).
    claim: str = ""


class Abandoned:
    """The claims this process let go of without being able to drop their record, or to write
    its answer, because NATS did not answer: kv key -> (claim, since, the ``done`` record to
    write or None to drop it), at most ``limit``, each for ``STALE_AFTER`` (then any process
    takes the record over anyway).

    They are settled in the background once NATS answers again (``_settle``, every
    ``SETTLE_EVERY_S``): another API process's retry no longer waits ``STALE_AFTER`` for a
    record nothing runs for, and a command that was done gets its answer kept, so that a retry
    after those two minutes does not run it again (found by an audit of the chaos audit's fix,
    which helped this process's retries only)."""

    def __init__(self, records: Callable[[], Awaitable[KeyValue]], limit: int = 10_000) -> None:
        self.records = records  # the bucket, when NATS answers
        self.limit = limit
        self.claims: dict[str, tuple[str, float, bytes | None]] = {}
        self._settling: asyncio.Task[None] | None = None

    def add(self, kv_key: str, claim: str, done: bytes | None = None) -> None:
        """Let ``claim``'s record go: dropped (``done`` None) or given ``done`` once NATS answers."""
        self.claims.pop(kv_key, None)
        while len(self.claims) >= self.limit:
            self.claims.pop(next(iter(self.claims)))
        self.claims[kv_key] = (claim, time.monotonic(), done)
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._settle(), name="idempotency-settle")

    def holds(self, kv_key: str, claim: str) -> bool:
        """Whether nothing runs for the record ``claim`` wrote: this process let it go, with no
        answer to keep (a done command's record is settled, not taken over: it would run again)."""
        left = self.claims.get(kv_key)
        if left is None or time.monotonic() - left[1] > STALE_AFTER or left[2] is not None:
            return False
        return bool(claim) and left[0] == claim

    async def _settle(self) -> None:
        while self.claims:
            await asyncio.sleep(SETTLE_EVERY_S)
            try:
                kv = await self.records()
                for kv_key in list(self.claims):
                    await self._settle_one(kv, kv_key)
            except NATS_UNAVAILABLE as err:  # still away: the next round tries again
                log.debug("api.idempotency_settle_waiting", error=repr(err), left=len(self.claims))
            except Exception as err:  # an answer NATS should not give: tried again, each at most STALE_AFTER
                log.warning("api.idempotency_settle_failed", error=repr(err), left=len(self.claims))
                count_skip("api.idempotency_settle")

    async def _settle_one(self, kv: KeyValue, kv_key: str) -> None:
        claim, since, done = self.claims[kv_key]
        if time.monotonic() - since > STALE_AFTER:  # any process takes it over by now
            self.claims.pop(kv_key, None)
            return
        try:
            entry = await kv.get(kv_key)
        except KeyNotFoundError:
            entry = None
        try:
            left = msgspec.json.decode(entry.value or b"{}", type=Record) if entry is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            left = None  # not a record this API wrote: nothing of ours to settle
        if entry is not None and left is not None and left.state == "running" and left.claim == claim:
            try:
                if done is None:
                    await kv.delete(kv_key, last=entry.revision)
                else:
                    await kv.update(kv_key, done, last=entry.revision)
            except KeyWrongLastSequenceError:  # taken over meanwhile: it is the other claim's now
                pass
            else:
                log.info("api.idempotency_record_settled", idempotency_record=kv_key[:16], kept=done is not None)
        self.claims.pop(kv_key, None)
