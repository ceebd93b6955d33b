"""Folding a batch: every event of it through ``fold``, the summaries it touches through
``merge``/``merge_customer``, on top of the summaries as committed before the batch. Pure:
the backends pass the loaders and write the ``BatchRows`` it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import msgspec

from events.digests import fingerprint, holds
from events.model import ConversationEvent
from events.stored import StoredEvent
from services.timelines.fold_event import fold
from services.timelines.redact import redact_customer, redact_entry
from services.timelines.rows import ConversationSummary, CustomerLink, CustomerSummary, TimelineEntry
from services.timelines.summaries import merge, merge_customer

S = TypeVar("S")


class BatchRows(msgspec.Struct, kw_only=True):
    entries: list[TimelineEntry]
    summaries: dict[str, ConversationSummary]  # the final state of every summary the batch touched
    customers: dict[str, CustomerSummary] = {}  # likewise for customers
    links: list[CustomerLink] = []
    # Customers erased in this batch (CustomerErased): the store redacts the rows it already
    # holds of them (the entries above are redacted already).
    erased: list[str] = []
    # Events of the batch folded before (re-published): left out.
    repeats: int = 0


def _none(_key: str) -> None:
    return None


def _erased(customer: CustomerSummary | None) -> bool:
    return customer is not None and customer.erased


class _Known(Generic[S]):
    """Summaries as the batch leaves them; each is loaded from the store at most once."""

    def __init__(self, load: Callable[[str], S | None]) -> None:
        self.rows: dict[str, S] = {}
        self._load = load
        self._absent: set[str] = set()  # loaded, and not in the store

    def get(self, key: str) -> S | None:
        found = self.rows.get(key)  # one lookup in the common case (called several times an event)
        if found is not None or key in self._absent:
            return found
        found = self._load(key)
        if found is None:
            self._absent.add(key)
        else:
            self.rows[key] = found
        return found


def fold_batch(
    events: Iterable[StoredEvent],
    load_summary: Callable[[str], ConversationSummary | None],
    load_customer: Callable[[str], CustomerSummary | None] = _none,
) -> BatchRows:
    """Fold a batch (in sequence order). ``load_summary``/``load_customer`` read a summary as
    committed before the batch; each is loaded at most once. Entries without a channel take
    their conversation's channel, so filtering a timeline by channel finds assignments too."""
    entries: list[TimelineEntry] = []
    summaries = _Known(load_summary)
    customers = _Known(load_customer)
    links: list[CustomerLink] = []
    erased: list[str] = []
    repeats = 0
    # Bound once: this loop runs once an event of the log in a rebuild.
    known_summaries, known_customers = summaries.rows, customers.rows
    summary_of, customer_of, add_entry = summaries.get, customers.get, entries.append
    for stored in events:
        event = stored.event
        digest = b""
        if isinstance(event, ConversationEvent):
            # A re-published event (the same fact again at a later sequence) folds to nothing:
            # no second entry, no second count (``events.digests``).
            digest = fingerprint(event)
            current = summary_of(event.conversation_id)
            if current is not None and holds(current.folded, digest):
                repeats += 1
                continue
        folded = fold(stored)
        if folded.link is not None:
            links.append(folded.link)
        change = folded.customer
        if change is not None:
            key = change.customer_id
            merged = merge_customer(customer_of(key), change)
            # An erased customer stays erased: what arrives later is redacted too.
            known_customers[key] = redact_customer(merged) if merged.erased else merged
        for key in folded.erased:
            current = customer_of(key)
            if current is not None:  # a customer the projection never saw gets no row now
                known_customers[key] = redact_customer(current)
            if key not in erased:
                erased.append(key)
        e = folded.entry
        if folded.change is not None:
            cid = folded.change.conversation_id
            summary = merge(summary_of(cid), folded.change, digest)
            known_summaries[cid] = summary
            if e is not None and e.channel is None and summary.channel is not None:
                e = msgspec.structs.replace(e, channel=summary.channel)
        elif digest and e is not None:  # an entry without a summary change: remembered all the same
            cid = e.conversation_id or ""
            current = summary_of(cid) if cid else None
            if current is not None:
                known_summaries[cid] = msgspec.structs.replace(current, folded=current.folded + digest)
        if e is not None:
            add_entry(e)
    # Entries of customers erased (in this batch or before it) lose their personal data.
    gone = {c for c in {e.customer_id for e in entries} if _erased(customers.get(c))}
    if gone:
        entries = [redact_entry(e) if e.customer_id in gone else e for e in entries]
    return BatchRows(
        entries=entries,
        summaries=summaries.rows,
        customers=customers.rows,
        links=links,
        erased=erased,
        repeats=repeats,
    )
