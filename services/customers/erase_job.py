"""An erasure under way, recorded so that it finishes after a crash at any point
(``services.customers.erase``).

The erasure reads the family's addresses from the log, opened with their data keys, and needs
them until its last step: after ``CustomerErased`` it reads ``RD_INBOUND`` again for what
arrived from those addresses while it ran. The keys are destroyed before that, so a run that
died between the two left the addresses unreadable, and a retry (or nobody) never erased the
raw messages that had come from them meanwhile: they stayed in clear until retention.

So before its first destructive step an erasure records itself in ``rd_identity`` under
``_erasing.<survivor>`` (the ``_`` keys are not addresses): who asked, why, and the family's
addresses sealed with a key of its own (``rd.keys._system.erasure_<nonce>_<survivor>``; an
address is never on disk in clear because of this). A retry reads the record back and has the
addresses again; the API resumes every recorded erasure at its start and every hour
(``services.api.erasure_jobs``), so one whose caller went away finishes too. The last step
erases the job's key (securely: the record's addresses read as nothing from then on), then
the record. A crash between those two leaves a record whose addresses no longer open: the
erasure is run once more, from the log, and the record goes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from events.personal import ERASED, CustomerKeys
from events.personal.box import Box
from events.skips import count_skip
from services.customers.erase_match import Family
from services.customers.scan import scan
from services.identity import IdentityDirectory

log = structlog.get_logger(__name__)

JOB_PREFIX = "_erasing."
_KEY_PREFIX = "erasure_"
_FIELD = "erasure_address"  # the associated data of each sealed address (with the survivor's id)


class ErasureJob(msgspec.Struct, frozen=True, kw_only=True):
    """``_erasing.<survivor>`` in ``rd_identity``: an erasure started and not known finished."""

    customer_id: str  # the survivor
    requested: str  # the id asked for
    reason: str  # as CustomerErased has it (clear on the log too)
    actor: str
    started_at: datetime
    key: str  # the system key the addresses are sealed with
    identities: list[str] = []  # sealed
    unlinked: list[str] = []  # sealed


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ErasureJob)


def _key_name(survivor: str) -> str:
    """A new job key's name: ``erasure_<12 hex>_<survivor>`` (``_job_key_of`` reads it back)."""
    return f"{_KEY_PREFIX}{os.urandom(6).hex()}_{survivor}"


def _job_key_of(name: str, survivor: str) -> bool:
    """Whether ``name`` is a job key of ``survivor``'s erasures (ids may hold ``_``: parsed, not
    matched as a prefix)."""
    return name.startswith(_KEY_PREFIX) and name[len(_KEY_PREFIX) + 13 :] == survivor


def _readable(identity: str) -> bool:
    return bool(identity) and ERASED not in identity


class ErasureJobs:
    """The recorded erasures of one deployment (``rd_identity``, keys in ``RD_KEYS``)."""

    def __init__(self, directory: IdentityDirectory, keys: CustomerKeys) -> None:
        self.directory = directory
        self.keys = keys

    async def read(self, survivor: str) -> ErasureJob | None:
        try:
            entry = await self.directory.kv.get(JOB_PREFIX + survivor)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return _decoder.decode(entry.value)
        except msgspec.DecodeError as err:  # damaged: the erasure runs from the log alone
            log.warning("customers.erasure_job_unreadable", customer_id=survivor, error=type(err).__name__)
            count_skip("customers.erasure_job_unreadable")
            return None

    async def begin(self, family: Family, survivor: str, requested: str, reason: str, actor: str) -> None:
        """Add the addresses a crashed run recorded to ``family`` (they no longer read on the
        log once the keys went), then record the job with the family's addresses, before any
        of them is erased anywhere."""
        earlier = await self.read(survivor)
        if earlier is not None:
            identities, unlinked = await self._opened(earlier)
            if identities or unlinked:
                log.info("customers.erasure_resumed", customer_id=survivor, started_at=earlier.started_at.isoformat())
            family.identities |= identities
            family.unlinked |= unlinked - family.identities
        name = earlier.key if earlier is not None else _key_name(survivor)
        box = Box(AESGCM(await self.keys.system_key(name)), survivor)
        job = ErasureJob(
            customer_id=survivor,
            requested=requested,
            reason=reason,
            actor=actor,
            started_at=earlier.started_at if earlier is not None else datetime.now(UTC),
            key=name,
            identities=[box.seal(_FIELD, i) for i in sorted(family.identities)],
            unlinked=[box.seal(_FIELD, i) for i in sorted(family.unlinked)],
        )
        await self.directory.kv.put(JOB_PREFIX + survivor, _encoder.encode(job))

    async def finish(self, survivor: str) -> None:
        """The erasure ended: its key goes first (the record's addresses then read as nothing
        wherever its bytes still lie), then the record."""
        # Every job key of the survivor, not only the record's: two erasures of the family
        # run at once each made one, and the record names the last written.
        for name in await self.keys.system_key_names():
            if _job_key_of(name, survivor):
                await self.keys.erase_system_key(name)
        await self.directory.drop_key(JOB_PREFIX + survivor)

    async def _opened(self, job: ErasureJob) -> tuple[set[str], set[str]]:
        key = await self.keys.find_system_key(job.key)
        if key is None:  # finished but for the record, or damaged
            return set(), set()
        box = Box(AESGCM(key), job.customer_id)
        identities = {box.open(_FIELD, v) for v in job.identities}
        unlinked = {box.open(_FIELD, v) for v in job.unlinked}
        return {i for i in identities if _readable(i)}, {i for i in unlinked if _readable(i)}

    async def pending(self, js: JetStreamContext) -> AsyncIterator[ErasureJob]:
        """Every recorded erasure (not known finished), oldest record first."""
        bucket = self.directory.bucket
        async for msg in scan(js, f"KV_{bucket}", f"$KV.{bucket}.{JOB_PREFIX}>", last_per_subject=True):
            if not msg.data:
                continue
            try:
                yield _decoder.decode(msg.data)
            except msgspec.DecodeError as err:
                log.warning("customers.erasure_job_unreadable", key=msg.subject, error=type(err).__name__)
                count_skip("customers.erasure_job_unreadable")
