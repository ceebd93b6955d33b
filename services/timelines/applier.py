"""Applying a batch of log events to a timeline store by the projector's rules, without NATS.

One transaction per batch: the rows and the checkpoint together (``TimelineStore.apply``,
which checks the checkpoint it expects). A batch the store refuses is applied again one
event at a time; an event it keeps refusing while it answers otherwise is quarantined
(``_quarantine``) and the checkpoint moves past it. A fault the store says is its own
(``StoreUnavailable``: connection lost, lock timeout, disk full, read-only) quarantines
nothing: it is raised, and the caller backs off and resumes from the checkpoint.
``Projector`` (the live projector) and the rebuild's writer process
(``services.timelines.bulk``, which must start without the service stack) are both
appliers, so rebuilt rows are live rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from events import subjects
from events.errors import describe_error
from events.stored import StoredEvent
from services.timelines.store import (
    CheckpointMismatch,
    StoreUnavailable,
    TimelineStore,
    partition_key,
    partition_of,
)

log = structlog.get_logger("relaydesk.projector")

# How many times an event the store refuses is tried on its own before it is quarantined.
APPLY_ATTEMPTS = 3


class BatchApplier:
    def __init__(self, timelines: TimelineStore, *, partition: tuple[int, int] = (0, 1)) -> None:
        self.timelines = timelines
        self.index, self.count = partition
        self.key = partition_key(self.index, self.count)
        self.applied = 0  # events handed to the store by this instance (for metrics/tests)
        self.position = 0  # the checkpoint as this applier last saw it

    async def apply_batch(self, chunk: Sequence[StoredEvent], *, through: int | None = None) -> None:
        """Apply one batch in one transaction. ``through``: the last sequence read, when it
        is past the batch's last event (events left out that fold to nothing)."""
        await self._apply(chunk, through=through)

    async def _quarantine(self, stored: StoredEvent, error: str) -> None:
        """Park an event the store cannot apply (the live projector: in the event store's
        quarantine; the rebuild's writer: reported to the reader, which parks it)."""
        raise NotImplementedError

    def _batch_refused(self) -> None:
        """Count a batch the store refused (already logged; its events are applied singly):
        the live projector counts it in ``/metrics``, the rebuild's writer has none."""

    def _mine(self, stored: StoredEvent) -> bool:
        if self.count <= 1:
            return True
        scope = subjects.parse_conversation_subject(stored.subject)
        return scope is not None and partition_of(scope[0], self.count) == self.index

    async def _apply(self, chunk: Sequence[StoredEvent], *, through: int | None = None) -> None:
        if not chunk and through is None:
            return
        mine = chunk if self.count <= 1 else [e for e in chunk if self._mine(e)]
        through = max(through or 0, chunk[-1].seq if chunk else 0)
        try:
            await self.timelines.apply(mine, key=self.key, expect=self.position, through=through)
        except (CheckpointMismatch, StoreUnavailable):
            raise  # the store's state, not the batch's: the caller resumes from the checkpoint
        except Exception as err:
            first = mine[0] if mine else chunk[0] if chunk else None
            scope = subjects.parse_conversation_subject(first.subject) if first else None
            log.warning(
                "projector.batch_refused",
                key=self.key,
                first_seq=chunk[0].seq if chunk else through,
                last_seq=through,
                events=len(mine),
                customer_id=scope[0] if scope else None,
                conversation_id=scope[1] if scope else None,
                error=repr(err),
                action="apply one event at a time",
            )
            self._batch_refused()
            await self._apply_singly(chunk, through)
            return
        self.position = max(self.position, through)
        self.applied += len(mine)
        if mine:
            last = subjects.parse_conversation_subject(mine[-1].subject)
            log.debug(
                "projector.applied",
                key=self.key,
                events=len(mine),
                first_seq=mine[0].seq,
                last_seq=through,
                customer_id=last[0] if last else None,
                conversation_id=last[1] if last else None,
            )

    async def _apply_singly(self, chunk: Sequence[StoredEvent], through: int) -> None:
        """Apply a refused batch one event at a time. An event the store keeps refusing while
        it answers otherwise (its checkpoint reads fine) cannot be applied: it is quarantined
        and the checkpoint moves past it. A store that does not answer raises: the caller
        backs off and resumes from the checkpoint, nothing skipped."""
        for stored in chunk:
            mine = [stored] if self._mine(stored) else []
            for attempt in range(APPLY_ATTEMPTS):
                try:
                    await self.timelines.apply(mine, key=self.key, expect=self.position, through=stored.seq)
                    self.applied += len(mine)
                    break
                except (CheckpointMismatch, StoreUnavailable):
                    raise
                except Exception as err:
                    await self.timelines.checkpoint(self.key)  # raises if the store itself is away
                    if attempt + 1 < APPLY_ATTEMPTS:
                        await asyncio.sleep(0.05 * 2**attempt)  # a passing lock or conflict
                        continue
                    await self._quarantine(stored, f"cannot apply: {describe_error(err)}")
                    await self.timelines.apply([], key=self.key, expect=self.position, through=stored.seq)
            self.position = max(self.position, stored.seq)
        if through > self.position:
            await self.timelines.apply([], key=self.key, expect=self.position, through=through)
            self.position = through
