"""What the parts of one chat connector (sessions, inbound messages, the socket, live push) share."""

from __future__ import annotations

from typing import Any, NamedTuple

from .history import ChatHistory
from .settings import ChatSettings


class Shared(NamedTuple):
    """The connector's settings, allowed origins, history stream and bound log."""

    settings: ChatSettings
    origins: frozenset[str]
    history: ChatHistory
    log: Any


class ChatPart:
    """A part of one connector, built from what the connector's parts share."""

    def __init__(self, shared: Shared) -> None:
        self.settings, self.origins, self.history, self.log = shared
