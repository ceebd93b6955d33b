"""A customer's conversation ids, from the subjects the log holds for them.

``rd.evt.c.<customer>.<conversation>``: asked of the stream's per-subject state
(``events.kv.stream_subjects``, paged), so nothing is read or decrypted, and an erased
customer's conversations are still found (the subjects outlive the erasure)."""

from __future__ import annotations

from collections.abc import Iterable

from nats.js import JetStreamContext

from events import subjects
from events.kv import stream_subjects


async def conversation_ids(js: JetStreamContext, customer_ids: Iterable[str]) -> list[str]:
    """Every conversation id the log has a subject for, of any of ``customer_ids``, sorted."""
    found: set[str] = set()
    for customer_id in customer_ids:
        for subject in await stream_subjects(js, subjects.EVENTS_STREAM, subjects.customer_filter(customer_id)):
            parsed = subjects.parse_conversation_subject(subject)
            if parsed is not None and parsed[1] != subjects.CUSTOMER_SCOPE:
                found.add(parsed[1])
    return sorted(found)
