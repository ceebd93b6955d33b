"""Connector SDK: subclass ``Connector``, run it with ``ConnectorRuntime``, test it with
``connectors.sdk.conformance``; HMAC webhook signatures: ``connectors.sdk.signatures``.
See ``connectors/README.md``."""

from .base import Connector, ConnectorSettings, DeliveryResult, ProviderRequest, Route, utcnow
from .errors import (
    ConnectorConfigError,
    ConnectorError,
    ConnectorNotFound,
    Malformed,
    PermanentDeliveryError,
    TooLarge,
    TransientDeliveryError,
    Unauthentic,
    Unavailable,
)
from .publish import msg_id
from .runtime import ConnectorRuntime

__all__ = [
    "Connector",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorNotFound",
    "ConnectorRuntime",
    "ConnectorSettings",
    "DeliveryResult",
    "Malformed",
    "PermanentDeliveryError",
    "ProviderRequest",
    "Route",
    "TooLarge",
    "TransientDeliveryError",
    "Unauthentic",
    "Unavailable",
    "msg_id",
    "utcnow",
]
