"""Exceptions a connector raises; the SDK turns each into the right answer for the provider."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every SDK error. ``reason`` is safe to show the caller (no PII, no secrets)."""

    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthentic(ConnectorError):
    """The request does not prove it comes from the provider: HTTP 403, nothing published."""

    status = 403


class Malformed(ConnectorError):
    """The request cannot be understood: HTTP 400, nothing published (the provider should not retry)."""

    status = 400


class TooLarge(ConnectorError):
    """The request body is over the connector's ``max_body_bytes``: HTTP 413."""

    status = 413


class TooSlow(ConnectorError):
    """The request body did not arrive in time (``connectors.sdk.http.BODY_TIMEOUT``): HTTP 408."""

    status = 408


class Unavailable(ConnectorError):
    """NATS did not acknowledge in time (or is unreachable): HTTP 503, so the provider retries."""

    status = 503


class TransientDeliveryError(ConnectorError):
    """Raised by ``deliver`` for a failure worth retrying (provider 5xx, timeout, rate limit);
    ``retry_after``: the seconds the provider asked to wait (its ``Retry-After``), if it did."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(ConnectorError):
    """Raised by ``deliver`` for a failure that retrying cannot fix (provider 4xx)."""


class ConnectorNotFound(LookupError):
    """No connector of that name is installed (see ``connectors.sdk.registry``)."""


class ConnectorConfigError(ValueError):
    """A ``[connectors.<name>]`` table does not validate against the connector's Settings."""
