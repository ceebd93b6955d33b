"""Where the delivery service's folded facts start from, and where they are saved.

Folding the whole log at every start took as long as the log is long (a minute and more at
a million events), and no notice went out meanwhile. So the active instance saves what it
folded (``router.snapshot``'s format, object ``delivery`` in ``rd_snapshots``) whenever all it
folded is delivered, and a start reads the log on from there.

The snapshot holds no personal data: the contact, preview and subject of the conversations
open in it are read again from their own subjects on the log, when an event first touches
them after the start (``Facts.unread``), as they stood at the snapshot.
"""

from __future__ import annotations

import asyncio

import structlog

from events import subjects
from events.objects import save_object
from events.skips import count_skip
from events.store import EventStore, StoredEvent
from router import snapshot
from services.delivery.notices import Facts
from services.spacing import Spacing
from services.state_snapshots import read_state

log = structlog.get_logger(__name__)

SNAPSHOT_NAME = "delivery"
# Saved after ``[delivery] snapshot_every`` events folded at least, and spaced so that
# encoding (which stops the loop) takes at most this share of the time.
SNAPSHOT_DUTY = 0.01
# Conversations open at the snapshot whose personal facts are read from the log at once.
UNREAD_AT_ONCE = 32


class FactSnapshots:
    def __init__(self, store: EventStore, facts: Facts, *, enabled: bool, every: int) -> None:
        self.store = store
        self.facts = facts
        self.enabled = enabled
        self.every = every
        self.started_from = 0  # the log sequence of the snapshot it started from (0: none)
        self.saved = 0  # snapshots saved by this instance
        self.since = 0  # events folded since the last one
        self._spacing = Spacing(SNAPSHOT_DUTY)
        self._saving: asyncio.Task[None] | None = None

    # -- starting ---------------------------------------------------------------------

    async def restore(self, checkpoint: int) -> int:
        """Load the snapshot into ``facts``; the log sequence to read on after (0: none
        usable, fold the whole log)."""
        if not self.enabled:
            return 0
        state = await read_state(self.store.js, SNAPSHOT_NAME, reader="delivery")
        if state is None:
            return 0
        if state.last_seq > checkpoint:
            # Folded past what was delivered (the checkpoint was set back by hand): the facts
            # in between would make no notices. Only the whole log says what is due again.
            log.warning(
                "delivery.snapshot_ignored",
                reason=f"snapshot at {state.last_seq} is past the checkpoint {checkpoint}",
                action="replay the whole log",
            )
            return 0
        self.facts.restore(state)
        self.started_from = state.last_seq
        log.info("delivery.snapshot_loaded", seq=state.last_seq, open_conversations=len(self.facts.unread))
        return state.last_seq

    async def read_unread(self, batch: list[StoredEvent]) -> None:
        """Before ``batch`` is folded: the personal facts of the conversations it touches
        that were open at the snapshot, read from their subjects. One that cannot be read is
        said and counted; its notices go out without contact, preview or subject."""
        wanted = sorted(self.facts.unread_in(batch))
        for at in range(0, len(wanted), UNREAD_AT_ONCE):
            chunk = wanted[at : at + UNREAD_AT_ONCE]
            read = await asyncio.gather(*(self._conversation_events(cid) for cid in chunk), return_exceptions=True)
            for cid, events in zip(chunk, read, strict=True):
                if isinstance(events, BaseException):
                    log.warning(
                        "delivery.personal_facts_unread",
                        conversation_id=cid,
                        stream=subjects.EVENTS_STREAM,
                        until_seq=self.facts.unread_until,
                        error=repr(events),
                        action="notices without contact, preview or subject",
                    )
                    count_skip("delivery.personal_facts")
                    events = []
                self.facts.absorb(cid, events)

    async def _conversation_events(self, cid: str) -> list[StoredEvent]:
        conv = self.facts.state.conversations.get(cid)
        if conv is None or not conv.customer_id:
            return []
        return await self.store.read_direct(subjects.conversation(conv.customer_id, cid))

    # -- saving -----------------------------------------------------------------------

    def due(self, checkpoint: int, waiting: int) -> bool:
        """Only at the saved ``checkpoint``, with nothing folded ``waiting`` to be delivered:
        a restart from the snapshot then misses no notice."""
        return (
            self.enabled
            and self.since >= self.every
            and not waiting
            and self.facts.state.last_seq <= checkpoint
            and (self._saving is None or self._saving.done())
            and self._spacing.due()
        )

    def save_soon(self) -> None:
        """Encode now (the state must not change under it); store in the background."""
        with self._spacing.run():
            data = snapshot.dump(self.facts.state)
        self.since = 0
        seq, encoded = self.facts.state.last_seq, self._spacing.last_seconds
        self._saving = asyncio.create_task(self._store(data, seq, encoded), name="delivery-snapshot")

    async def _store(self, data: bytes, seq: int, encoded: float) -> None:
        if await save_object(
            self.store.js, subjects.SNAPSHOT_BUCKET, SNAPSHOT_NAME, data, skip_as="delivery.snapshot_save", seq=seq
        ):
            self.saved += 1
            log.info("delivery.snapshot_saved", seq=seq, size=len(data), encode_ms=round(encoded * 1000, 1))

    async def finish(self) -> None:
        """A snapshot being stored is finished, not cut off."""
        if self._saving is not None and not self._saving.done():
            await asyncio.wait([self._saving])
