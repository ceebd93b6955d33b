"""The conformance kit fails connectors that are wrong in ways an integrator's own samples do
not show (found by an integrator: a connector checking only that the signature header was
there passed, and a correct one that fetched an OAuth token before each send failed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.sdk import ProviderRequest, Unauthentic
from connectors.sdk.conformance import RecordedRequest
from connectors.sms.connector import TwilioSmsConnector
from tests.connectors import test_sms_conformance as sms_kit  # not its class by name: pytest would run it here too

pytestmark = pytest.mark.integration


class HeaderPresenceOnly(TwilioSmsConnector):
    """Trusts any request that carries a signature header, whatever it signs."""

    def verify(self, request: ProviderRequest) -> None:
        if "X-Twilio-Signature" not in request.headers:
            raise Unauthentic("no signature")


class TrustingKit(sms_kit.TestSmsConformance):
    connector_class = HeaderPresenceOnly


async def test_a_connector_that_does_not_check_what_is_signed_fails_the_kit(tmp_path: Path) -> None:
    kit = TrustingKit()
    async with kit.running(tmp_path) as harness:
        await kit.test_a_valid_request_without_its_headers_is_rejected(harness)  # it wants the header...
        with pytest.raises(AssertionError, match="changed body answered 200"):
            await kit.test_a_valid_request_with_a_changed_body_is_rejected(harness)  # ...not what it signs


class TokenThenSend(TwilioSmsConnector):
    """Asks the provider for an access token before each send, as OAuth providers want."""

    async def deliver(self, reply: Any) -> Any:
        async with self.http.post(self.settings.api_base_url.rstrip("/") + "/oauth/token") as resp:
            assert resp.status == 200
        return await super().deliver(reply)


class TokenKit(sms_kit.TestSmsConformance):
    connector_class = TokenThenSend

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/oauth/token":
            return web.json_response({"access_token": "t"})
        return await super().provider_accepts(request)

    def is_send(self, request: RecordedRequest) -> bool:
        return request.path != "/oauth/token"


async def test_a_connector_that_fetches_a_token_before_each_send_passes_once_it_says_which_are_sends(
    tmp_path: Path,
) -> None:
    kit = TokenKit()
    async with kit.running(tmp_path) as harness:
        await kit.test_outbound_reply_is_delivered_and_recorded(harness)
        assert len(harness.fake.requests) == 2 and len(harness.fake.sends) == 1
    async with kit.running(tmp_path / "again") as harness:
        await kit.test_outbound_transient_failure_is_retried(harness)
