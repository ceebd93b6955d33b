"""Failures a process steps past rather than stops on (an unsubscribe on a closing connection,
a dead letter's payload a role may not read, a key preload NATS did not answer). Each is logged
where it happens, naming what was skipped, and counted here by where it happened."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from prometheus_client import Counter

_log = structlog.get_logger("relaydesk.skips")

SKIPPED = Counter(
    "relaydesk_skipped_total",
    "Work a process stepped past after a failure (logged where it happened), by where",
    ["where"],
)


def count_skip(where: str, n: int = 1) -> None:
    SKIPPED.labels(where=where).inc(n)


@contextmanager
def skipping(where: str, **context: object) -> Iterator[None]:
    """Step past any error of the block, logged (``where``, the error's type, ``context``: name
    the stream, subject or sequence skipped, never a body or an address) and counted.

    For clean-up steps whose failure changes nothing for the user (an unsubscribe on a closing
    connection, a lease release NATS does not answer); never for the work itself."""
    try:
        yield
    except Exception as err:
        _log.warning("skipped", where=where, error=type(err).__name__, **context)
        count_skip(where)


def another_customers(where: str, known: str | None, customer_id: str, conversation_id: str, seq: int) -> bool:
    """Whether an event on ``customer_id``'s subject names ``conversation_id``, which a fold
    knows under ``known``, another customer (a hand-written event reusing its id: folded, it
    moved that conversation and whatever the fold keeps of it to the other customer). Said and
    counted under ``where`` when so, by ids only; the fold leaves the event out."""
    if known is None or known == customer_id:
        return False
    _log.warning(
        "skipped",
        where=where,
        conversation_id=conversation_id,
        customer_id=customer_id,
        known_for=known,
        seq=seq,
        reason="an event naming another customer's conversation",
    )
    count_skip(where)
    return True
