"""Conformance kit for sink authors: subclass ``SinkConformance`` and give it a ``FakeHelpdesk``."""

from .fake import FakeComment, FakeHelpdesk, FakeSettings, FakeTicket, Seen, WebhookCall
from .kit import SinkConformance
from .rig import Rig, eventually

__all__ = [
    "FakeComment",
    "FakeHelpdesk",
    "FakeSettings",
    "FakeTicket",
    "Rig",
    "Seen",
    "SinkConformance",
    "WebhookCall",
    "eventually",
]
