"""Sink SDK: subclass ``Sink``, run it with ``SinkRuntime``, test it with
``services.sinks.conformance``. See ``services/sinks/README.md``, "Writing a sink"."""

from .actions import ConversationFacts, Relaydesk, stable_id
from .api import ProviderApi, retry_after_seconds
from .base import Sink, SinkEvent, SinkSettings, WebhookRequest, not_delivered, numeric_id
from .errors import AuthFailed, Malformed, Rejected, SinkConfigError, SinkError, SinkNotFound, Transient, Unauthentic
from .reload import SettingsSource, SettingsUnavailable
from .runtime import SinkRuntime
from .state import Link, ParkedEvent, SinkState

__all__ = [
    "AuthFailed",
    "ConversationFacts",
    "Link",
    "Malformed",
    "ParkedEvent",
    "ProviderApi",
    "Rejected",
    "Relaydesk",
    "SettingsSource",
    "SettingsUnavailable",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "SinkEvent",
    "SinkNotFound",
    "SinkRuntime",
    "SinkSettings",
    "SinkState",
    "Transient",
    "Unauthentic",
    "WebhookRequest",
    "not_delivered",
    "numeric_id",
    "retry_after_seconds",
    "stable_id",
]
