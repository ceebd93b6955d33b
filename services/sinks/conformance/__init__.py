"""Conformance kit for sink authors: subclass ``SinkConformance`` and give it a ``FakeHelpdesk``."""

from .fake import FakeComment, FakeHelpdesk, FakeTicket, Seen, WebhookCall
from .kit import SinkConformance
from .rig import Rig, eventually

__all__ = [
    "FakeComment",
    "FakeHelpdesk",
    "FakeTicket",
    "Rig",
    "Seen",
    "SinkConformance",
    "WebhookCall",
    "eventually",
]
