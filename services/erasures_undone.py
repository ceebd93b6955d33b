"""Erasures a restore of NATS undid: the erasure register against the log.

An erasure's marks (``_erased.<id>``), its ``CustomerErased`` and the destroyed data keys all
live in the JetStream store, so restoring a backup taken before the erasure brings the customer
back, keys included. GDPR practice is to apply again, after a restore, every erasure done since
the backup, from a register kept outside it. The register is the timelines store's
``erasures`` table (``TimelineStore.erasures``): the timelines database is derived and not
backed up with NATS, the projector records there every ``CustomerErased`` it folds, and no
rebuild clears it (a swap carries it over).

A registered customer whose ``CustomerErased`` is not on the log any more is an erasure undone.
The projector (partition 0) compares at every start and after each reconnect (a restore under
it comes back as one, and its store is then rebuilt from the restored log): each one undone is
logged once (``projector.erasure_undone``, error, the customer id only), counted in the
``relaydesk_erasures_undone`` gauge and named in its ``/readyz`` detail.
``relaydesk customers erase-again`` (``services.customers.erase_again``) erases them again; the
projector takes each off as it folds the new ``CustomerErased``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events import subjects
from events.codec import decode_log_event
from events.model import CustomerErased
from events.stored import StoredEvent
from services.metrics import ERASURES_UNDONE, measured
from services.timelines.rows import ErasureRecord
from services.timelines.store import TimelineStore

log = structlog.get_logger("relaydesk.projector")

ERASED, UNDONE, ABSENT = "erased", "undone", "absent"
AT_ONCE = 64  # registered erasures looked up on the log together


def _erasure_of(data: bytes | None, subject: str, customer_id: str) -> bool:
    if not data:
        return False
    event = decode_log_event(data, subject=subject)
    return isinstance(event, CustomerErased) and event.customer_id == customer_id


async def on_log(js: JetStreamContext, record: ErasureRecord) -> str:
    """Where ``record``'s customer stands on the log: ``erased`` (a ``CustomerErased`` of theirs
    is there: at the sequence the register has, one get, the usual case; else anywhere on their
    ``_customer`` subject, erased again after a restore at a sequence of the restored log's own),
    ``undone`` (their events are there, their erasure is not) or ``absent`` (nothing of theirs:
    a backup older than the customer, with nothing to erase). Only the events' types are
    decoded: nothing is opened."""
    subject = subjects.customer_scope(record.customer_id)
    try:
        raw = await js.get_msg(subjects.EVENTS_STREAM, seq=record.seq, direct=True)
        if raw.subject == subject and _erasure_of(raw.data, subject, record.customer_id):
            return ERASED
    except NotFoundError:
        pass  # the log ends before it: look on the subject
    seq, found = 1, False
    while True:
        try:
            raw = await js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            break
        if not raw.seq:
            break
        if _erasure_of(raw.data, subject, record.customer_id):
            return ERASED
        found, seq = True, int(raw.seq) + 1
    return UNDONE if found else ABSENT


async def undone_of(js: JetStreamContext, register: Iterable[ErasureRecord]) -> list[ErasureRecord]:
    """The erasures of ``register`` whose customer is on the log without its ``CustomerErased``:
    ``AT_ONCE`` looked up together (one get each, usually), not one after the other: the
    projector does it at every start and reconnect, before it follows the log, and a register
    of years holds thousands."""
    records = list(register)
    places: list[str] = []
    for start in range(0, len(records), AT_ONCE):
        places += await asyncio.gather(*(on_log(js, record) for record in records[start : start + AT_ONCE]))
    return [record for record, place in zip(records, places, strict=True) if place == UNDONE]


async def undone_erasures(js: JetStreamContext, timelines: TimelineStore) -> list[ErasureRecord]:
    """Every registered erasure undone (``undone_of`` the store's register)."""
    return await undone_of(js, await timelines.erasures())


class UndoneWatch:
    """The projector's view of the erasures undone: compared with the log on ``check``, each
    taken off as its new ``CustomerErased`` is folded (``folded``)."""

    def __init__(self, timelines: TimelineStore) -> None:
        self.timelines = timelines
        self.undone: dict[str, ErasureRecord] = {}
        self._reported: set[str] = set()

    @property
    def count(self) -> int:
        return len(self.undone)

    async def check(self, js: JetStreamContext) -> int:
        found = await undone_erasures(js, self.timelines)
        self.undone = {record.customer_id: record for record in found}
        for record in found:
            if record.customer_id not in self._reported:
                self._reported.add(record.customer_id)
                log.error(
                    "projector.erasure_undone",
                    customer_id=record.customer_id,
                    erased_seq=record.seq,
                    action="the log no longer holds this erasure (NATS restored from an older backup?): "
                    "run `relaydesk customers erase-again`",
                )
        self._reported &= set(self.undone)
        self._export()
        if found:
            log.error("projector.erasures_undone", count=len(found), action="relaydesk customers erase-again")
        return len(found)

    def folded(self, chunk: Sequence[StoredEvent]) -> None:
        """A batch the projector applied: an undone customer's new ``CustomerErased`` in it
        re-applied that erasure."""
        if not self.undone:
            return
        done = _erased_ids(chunk) & set(self.undone)
        if not done:
            return
        for customer_id in done:
            del self.undone[customer_id]
            self._reported.discard(customer_id)
            log.info("projector.erasure_reapplied", customer_id=customer_id)
        self._export()

    def _export(self) -> None:
        measured(ERASURES_UNDONE).set(len(self.undone))


def _erased_ids(chunk: Iterable[StoredEvent]) -> set[str]:
    return {e.event.customer_id for e in chunk if isinstance(e.event, CustomerErased)}
