"""A fake Twilio Messages API, as far as Relaydesk uses it (fixture ``fake_twilio`` in conftest)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.config import Config
from tests.fake_http import serving_posts

ACCOUNT_SID = "AC" + "1" * 32
OUR_NUMBER = "+15557654321"


class FakeTwilio:
    """Twilio's Messages API, as far as Relaydesk uses it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.auth: list[str | None] = []

    async def create(self, request: web.Request) -> web.Response:
        assert request.match_info["sid"] == ACCOUNT_SID
        self.auth.append(request.headers.get("Authorization"))
        self.messages.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"sid": f"SM{len(self.messages):032d}", "status": "queued"}, status=201)


@contextlib.asynccontextmanager
async def fake_twilio_server() -> AsyncIterator[tuple[FakeTwilio, str]]:
    """A ``FakeTwilio`` on a free port: (the fake, its base URL)."""
    fake = FakeTwilio()
    async with serving_posts({"/2010-04-01/Accounts/{sid}/Messages.json": fake.create}) as url:
        yield fake, url


def with_fake_twilio(config: Config, base_url: str) -> None:
    config.connectors["sms"].update(account_sid=ACCOUNT_SID, from_number=OUR_NUMBER, api_base_url=base_url)
