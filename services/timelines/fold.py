"""The timeline fold: pure functions from stored events to the rows they write.

No I/O and no clock reads. ``fold`` maps ONE stored event to at most one timeline entry and
at most one change to its conversation's summary; ``merge`` applies such a change to the
summary as it stood; ``fold_batch`` does both for a batch, given a way to load the summaries
the batch touches. Every backend calls ``fold_batch`` inside its write transaction, so both
backends write exactly the same rows.

Idempotence is layered: a backend skips events at or below its checkpoint; ``merge`` ignores a
change whose sequence is not newer than the summary's ``last_seq``; timeline entries are keyed
by (customer_id, seq) and inserted "or ignore".

The fold lives in modules by idea; this module is its public face (and holds its version):

* ``rows``: the row types (``TimelineEntry``, ``ConversationSummary``, ``CustomerSummary``,
  ``CustomerLink``) and ``utc``;
* ``changes``: what one event does (``SummaryChange``, ``CustomerChange``, ``Folded``, ``KEEP``);
* ``fold_event``: ``fold``, one stored event to its ``Folded``;
* ``summaries``: ``merge``, ``merge_customer``, ``with_family``;
* ``batch``: ``fold_batch`` and its ``BatchRows``;
* ``codec``: the text encodings the SQLite backend stores.
"""

from __future__ import annotations

from services.timelines.batch import BatchRows, fold_batch
from services.timelines.changes import KEEP, NOTHING, CustomerChange, Folded, SummaryChange
from services.timelines.codec import dump_json, iso, load_json, parse_iso
from services.timelines.fold_event import fold, reason_dict
from services.timelines.rows import (
    STATUSES,
    ConversationSummary,
    CustomerLink,
    CustomerSummary,
    Direction,
    Status,
    TimelineEntry,
    utc,
)
from services.timelines.summaries import merge, merge_customer, with_family

FOLD_VERSION = 9  # 3: identity_linked entries and linked identities on the customer; 4: platform of messages
# 5: customer_erased entries, erased customers redacted
# 6: note entries (NoteAdded)
# 7: a resolved conversation's summary is final (a re-published opening, message or decision changes nothing)
# 8: each conversation's summary keeps its events' digests: a re-published event writes no entry, counts nothing
# 9: every CustomerErased in the erasure register (table erasures): a store of 8 got the table empty at
#    the upgrade, missing the erasures it had folded (tests/timelines/test_fold_version_schema.py)
"""Bump whenever the fold writes different rows for the same events: a projector that finds a
store built by another version rebuilds it from the log (see ``Projector.run``)."""


__all__ = [
    "FOLD_VERSION",
    "KEEP",
    "NOTHING",
    "STATUSES",
    "BatchRows",
    "ConversationSummary",
    "CustomerChange",
    "CustomerLink",
    "CustomerSummary",
    "Direction",
    "Folded",
    "Status",
    "SummaryChange",
    "TimelineEntry",
    "dump_json",
    "fold",
    "fold_batch",
    "iso",
    "load_json",
    "merge",
    "merge_customer",
    "parse_iso",
    "reason_dict",
    "utc",
    "with_family",
]
