"""structlog setup: JSON in containers, console on a terminal, never PII in clear."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

from events.redact import scrub
from services import tracing
from services.terminal_text import printable

# Keys whose values are message bodies or contact addresses: logged only as a short hash,
# which still lets an operator correlate lines about the same address.
SENSITIVE_KEYS = frozenset(
    {
        *("text", "body", "email", "phone", "sender", "recipient", "contact", "address", "identity", "from_", "to"),
        # Found by an integrator: a connector's own names for them printed in clear.
        *("sender_name", "display_name", "customer_name", "full_name", "first_name", "last_name", "caller"),
        *("wa_id", "phone_number", "email_address"),
    }
)
# Keys whose values are free text that may quote an address: an exception's text and
# traceback, a provider's or a validator's reason. Phone numbers and email addresses in them
# are masked (``events.redact.scrub``); the rest stays readable.
FREE_TEXT_KEYS = frozenset({"event", "reason", "error", "exception", "detail", "why", "message"})


def fingerprint(value: object) -> str:
    return "h:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """After ``format_exc_info``: an exception's text is free text like any other."""
    for key in SENSITIVE_KEYS.intersection(event_dict):
        if event_dict[key] is not None:
            event_dict[key] = fingerprint(event_dict[key])
    for key in FREE_TEXT_KEYS.intersection(event_dict):
        value = event_dict[key]
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def terminal_safe(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For the console format only: the renderer writes ``event`` (a library's message, through
    ``logging``) and ``exception``/``stack`` (whose text may quote a header, a name, a mail)
    as they are, where every other value is shown as its repr. An ESC or C1 sequence in them
    cleared the operator's terminal or wrote her clipboard (OSC 52), a CR LF forged a line
    (found by an audit); they are shown escaped. JSON lines escape them already."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = printable(event)
    for key in ("exception", "stack"):
        value = event_dict.get(key)
        if isinstance(value, str):
            event_dict[key] = printable(value, lines=True)
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


def _http_fault(exc: BaseException | None) -> Any:
    """The aiohttp parsing error (a 4xx ``HttpProcessingError``) behind ``exc``, if any."""
    from aiohttp.http_exceptions import HttpProcessingError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class ClientFaults(logging.Filter):
    """aiohttp logs a request it could not parse or decode (a line or header too long, a
    gzip body that is not gzip) as "Unhandled exception" with a traceback, though it is the
    client's mistake and was answered 400: one line at warning, naming the kind, and never
    the request's text (the parser's message quotes the start of the line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fault = _http_fault(record.exc_info[1] if record.exc_info else None)
        if fault is not None:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = "http.bad_request", (), None, None
            record.kind, record.status = type(fault).__name__, fault.code
        return True


def _stdlib_to_structlog(renderer: Any, level: int, safe: list[Any]) -> None:
    """Lines logged by libraries through ``logging`` (aiohttp, nats-py, asyncio) rendered like
    ours, one JSON line each in containers: without it they came as multi-line plain text
    tracebacks amid the JSON."""
    handler = logging.StreamHandler(_CurrentStderr())  # type: ignore[arg-type]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_pii, *safe, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("kind", "status")),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
        )
    )
    handler.addFilter(ClientFaults())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "relaydesk", False)]:
        root.removeHandler(old)
    handler.relaydesk = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))  # libraries' info and debug chatter stays out


LEVELS = ("debug", "info", "warning", "error", "critical")
# Spelt as the logging module also takes it (logging.WARN): it worked before levels were checked.
LEVEL_ALIASES = {"warn": "warning"}
FORMATS = ("json", "console")


class LogSettingError(ValueError):
    """A log level or format that is none of the known ones: refused at start, so a typo cannot
    quietly log at info, or switch a container's JSON lines to console text (found by an audit)."""


def _choice(given: str | None, what: str, known: tuple[str, ...], aliases: dict[str, str] | None = None) -> str | None:
    """``given``, else RELAYDESK_LOG_<WHAT>, in lower case; None when neither is set."""
    variable = f"RELAYDESK_LOG_{what.upper()}"
    source, value = (f"log {what}", given) if given else (variable, os.environ.get(variable))
    value = (value or "").strip()
    if not value:
        return None
    chosen = (aliases or {}).get(value.lower(), value.lower())
    if chosen not in known:
        raise LogSettingError(f"{source} must be {', '.join(known[:-1])} or {known[-1]} (got {value!r})")
    return chosen


def log_format(fmt: str | None = None) -> str:
    """``fmt``, else RELAYDESK_LOG_FORMAT, else console on a terminal and JSON off one.
    Raises ``LogSettingError`` for a format that is neither."""
    return _choice(fmt, "format", FORMATS) or ("console" if sys.stderr.isatty() else "json")


def log_level(level: str | None = None) -> str:
    """``level``, else RELAYDESK_LOG_LEVEL, else info. Raises ``LogSettingError`` for no level."""
    return _choice(level, "level", LEVELS, LEVEL_ALIASES) or "info"


def is_json(fmt: str | None = None) -> bool:
    """Whether lines go out as JSON: ``fmt``, else RELAYDESK_LOG_FORMAT, else JSON off a terminal.
    A format that is neither is not JSON here (``configure`` refuses it)."""
    try:
        return log_format(fmt) == "json"
    except LogSettingError:
        return False


def fatal(reason: str, **fields: Any) -> None:
    """The reason a process stops, as one JSON line on stderr (whether or not logging is set up)."""
    line = {"event": "relaydesk.exit", "level": "critical", "reason": reason, **fields}
    line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    sys.stderr.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stderr.flush()


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """Log at ``level`` (else RELAYDESK_LOG_LEVEL, else info) in ``fmt`` (else
    RELAYDESK_LOG_FORMAT, else by the terminal). Raises ``LogSettingError`` for an unknown one."""
    number = getattr(logging, log_level(level).upper())
    fmt = log_format(fmt)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    safe: list[Any] = [] if fmt == "json" else [terminal_safe]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_pii,
            *safe,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _stdlib_to_structlog(renderer, number, safe)
