"""structlog setup: JSON in containers, console on a terminal, never PII in clear."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from services import tracing

# Keys whose values are message bodies or contact addresses: logged only as a short hash,
# which still lets an operator correlate lines about the same address.
SENSITIVE_KEYS = frozenset(
    {"text", "body", "email", "phone", "sender", "recipient", "contact", "address", "identity", "from_", "to"}
)


def fingerprint(value: object) -> str:
    return "h:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event_dict):
        if event_dict[key] is not None:
            event_dict[key] = fingerprint(event_dict[key])
    return event_dict


def add_trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``trace_id`` and ``span_id`` of the current span (``services.tracing``) on every line
    logged while a message is handled; nothing when tracing is off or no span is current.
    Ids a caller logged itself (a span that is not current) are kept."""
    ids = tracing.current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured:
    a stream swapped out and closed later (a test's capture, a redirected tool) must not
    take every later log line down with "I/O operation on closed file"."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str | None = None, fmt: str | None = None) -> None:
    level_name = (level or os.environ.get("RELAYDESK_LOG_LEVEL") or "info").upper()
    fmt = fmt or os.environ.get("RELAYDESK_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_pii,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
