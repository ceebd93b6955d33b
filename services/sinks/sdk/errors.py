"""Exceptions of the sink SDK; the runtime turns each into the right reaction."""

from __future__ import annotations


class SinkError(Exception):
    """Base of every SDK error. ``reason`` is safe to log and to answer (no PII, no secrets)."""

    status = 500

    def __init__(self, reason: str, *, http_status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        # The helpdesk's HTTP status when it answered one (404: the object is gone already).
        self.http_status = http_status


class Unauthentic(SinkError):
    """A webhook that does not prove it comes from the helpdesk: HTTP 403, nothing done."""

    status = 403


class Malformed(SinkError):
    """A webhook that cannot be understood: HTTP 400, nothing done (the helpdesk should not retry)."""

    status = 400


class Transient(SinkError):
    """The helpdesk (or NATS) failed in a way worth retrying: 5xx, timeouts, 429 past the
    retry budget. The log event is tried again later (never skipped); a webhook answers 503."""

    status = 503


class AuthFailed(SinkError):
    """The helpdesk refused the sink's credentials (401/403). The failure is logged at error
    level and counted (``relaydesk_sink_auth_failures_total``); the sink waits on the event
    (``/readyz`` 503), trying it again every ``auth_retry_pause`` seconds, so that once an
    operator fixes the credentials every event flows in order (none parked, none skipped)."""

    status = 502


class Rejected(SinkError):
    """The helpdesk refused a request for good (400, 404, 422…): the event is parked."""

    status = 502


class SinkNotFound(LookupError):
    """No sink of that name is installed (see ``services.sinks.sdk.registry``)."""


class SinkConfigError(ValueError):
    """A ``[sinks.<name>]`` table does not validate against the sink's Settings."""
