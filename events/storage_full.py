"""JetStream refusing to store anything more: its storage is used up.

A JetStream 503 is two things. A server restarting or electing a leader answers it for a moment,
and trying again is the cure; a server whose ``max_file_store`` (or the disk under it, or the
account's storage limit) is used up answers it to every write until an operator frees space or
raises the limit (found by a long-run audit: a log kept forever fills its disk). Both reached the
services as ``ServiceUnavailableError`` and were said as "NATS did not answer": connectors,
the API and ``relaydesk up`` named the wrong cause, and NATS's own words ("insufficient
resources") were cut from the logs. The callers that answer a client (the connectors' 503, the
API's 503) or stop a service ask ``storage_full`` and say ``STORAGE_FULL``, log
``nats.storage_full`` and count ``relaydesk_nats_storage_full_total{where}`` (an alert rule
watches it); the work itself is tried again as for any 503, so nothing is lost meanwhile.
"""

from __future__ import annotations

import time

import structlog
from nats.js.errors import APIError
from prometheus_client import Counter

from events.errors import describe_error

log = structlog.get_logger("relaydesk.nats")

# JetStream's error codes for "no room": insufficient resources (a write with the server's
# file or memory store full), storage or memory resources exceeded, the account's limits.
STORAGE_CODES = frozenset({10023, 10028, 10047, 10002})

STORAGE_FULL = (
    "NATS JetStream has no storage left (insufficient resources): nothing new is stored until an"
    " operator frees disk space on the NATS servers or raises max_file_store or the account's limit"
)

STORAGE_FULL_REFUSALS = Counter(
    "relaydesk_nats_storage_full_total",
    "Writes JetStream refused because its storage is used up (max_file_store, the disk, the "
    "account's limit), by where they were refused",
    ["where"],
)

SAY_EVERY_S = 60.0  # one error line a minute per place is enough to be seen
_said: dict[str, float] = {}


def storage_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or what it was raised from) is JetStream refusing for want of storage."""
    for _ in range(5):  # a cause chain is short; a cycle is not followed for ever
        if err is None:
            return False
        if isinstance(err, APIError) and err.err_code in STORAGE_CODES:
            return True
        err = err.__cause__
    return False


def note_storage_full(where: str, err: BaseException, **context: object) -> None:
    """Count a refusal for want of storage and say it (at most once a minute per ``where``)."""
    STORAGE_FULL_REFUSALS.labels(where=where).inc()
    now = time.monotonic()
    if now - _said.get(where, -SAY_EVERY_S) >= SAY_EVERY_S:
        _said[where] = now
        log.error("nats.storage_full", where=where, refused=describe_error(err), hint=STORAGE_FULL, **context)
