"""The Zendesk sink against the sink conformance kit and a fake Zendesk."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from services.sinks.conformance import FakeHelpdesk, SinkConformance
from services.sinks.sdk import Sink
from services.sinks.zendesk import ZendeskSink

from .zendesk_fake import FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration


class TestZendeskConformance(SinkConformance):
    sink_class: ClassVar[type[Sink]] = ZendeskSink

    def fake_helpdesk(self) -> FakeHelpdesk:
        return FakeZendesk()

    def config(self, api_url: str) -> dict[str, Any]:
        return zendesk_config(api_url)

    def rotated_credentials(self, table: dict[str, Any]) -> dict[str, Any] | None:
        return {**table, "api_token": "zd-rotated-token"}
