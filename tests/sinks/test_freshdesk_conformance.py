"""The Freshdesk sink against the same conformance kit as Zendesk's (the SDK, proven twice)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from services.sinks.conformance import FakeHelpdesk, SinkConformance
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.sdk import Sink

from .freshdesk_fake import FakeFreshdesk, freshdesk_config

pytestmark = pytest.mark.integration


class TestFreshdeskConformance(SinkConformance):
    sink_class: ClassVar[type[Sink]] = FreshdeskSink

    def fake_helpdesk(self) -> FakeHelpdesk:
        return FakeFreshdesk()

    def config(self, api_url: str) -> dict[str, Any]:
        return freshdesk_config(api_url)

    def rotated_credentials(self, table: dict[str, Any]) -> dict[str, Any] | None:
        return {**table, "api_key": "fd-rotated-key"}
