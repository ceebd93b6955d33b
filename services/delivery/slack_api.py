"""A small Slack Web API client: ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``.

Slack answers HTTP 200 with ``{"ok": true, …}`` or ``{"ok": false, "error": "invalid_auth"}``,
and HTTP 429 with ``Retry-After`` (seconds) when a method's rate limit is reached. A call's
result is never an exception: ``SlackResult`` says whether it worked, whether trying again
may help (429, 5xx, ``ratelimited``, ``internal_error``, a timeout) and why not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import structlog

from services.delivery.slack_settings import SlackSettings

log = structlog.get_logger(__name__)

# Slack's own errors that say "not now" rather than "no" (api.slack.com/methods, each method's errors).
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


@dataclass(frozen=True)
class SlackResult:
    ok: bool
    retryable: bool = False
    status_code: int | None = None
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None


class SlackApi:
    """Calls with the bot token. ``http`` gives the shared session; ``max_wait`` caps how long a
    429's ``Retry-After`` is waited out before the call returns (retryable)."""

    def __init__(self, settings: SlackSettings, http: Callable[[], aiohttp.ClientSession], max_wait: float) -> None:
        self.settings = settings
        self.http = http
        self.max_wait = max_wait

    async def call(self, method: str, payload: dict[str, Any]) -> SlackResult:
        url = f"{self.settings.api_url.rstrip('/')}/{method}"
        headers = {
            "Authorization": f"Bearer {self.settings.bot_token}",
            "Content-Type": "application/json; charset=utf-8",
        }
        started = time.monotonic()
        try:
            async with self.http().post(url, data=msgspec.json.encode(payload), headers=headers) as r:
                raw = await r.read()
                status = r.status
                retry_after = _seconds(r.headers.get("Retry-After"))
        except TimeoutError:
            return SlackResult(False, True, None, f"{method}: timed out")
        except aiohttp.ClientError as err:
            return SlackResult(False, True, None, f"{method}: {type(err).__name__}")
        ms = int((time.monotonic() - started) * 1000)
        if status == 429:
            wait = min(retry_after if retry_after is not None else 1.0, self.max_wait)
            log.info("slack.rate_limited", method=method, retry_after=retry_after, waiting_s=wait)
            # Slack asked for a pause: honour it before anyone tries again.
            await asyncio.sleep(wait)
            return SlackResult(False, True, 429, f"{method}: HTTP 429 rate limited", retry_after=retry_after)
        if status >= 300:
            retryable = status >= 500 or status in (408, 425)
            return SlackResult(False, retryable, status, f"{method}: HTTP {status}")
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return SlackResult(False, True, status, f"{method}: answer is not JSON")
        if not isinstance(data, dict):
            return SlackResult(False, True, status, f"{method}: unexpected answer")
        if not data.get("ok"):
            error = str(data.get("error") or "unknown_error")
            return SlackResult(False, error in RETRYABLE_ERRORS, status, f"{method}: {error}", data)
        log.debug("slack.called", method=method, ms=ms)
        return SlackResult(True, False, status, "", data)

    async def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]], **extra: Any) -> SlackResult:
        return await self.call("chat.postMessage", {"channel": channel, "text": text, "blocks": blocks, **extra})

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> SlackResult:
        return await self.call("chat.update", {"channel": channel, "ts": ts, "text": text, "blocks": blocks})

    async def ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> SlackResult:
        payload: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread_ts:
            payload["thread_ts"] = thread_ts
        return await self.call("chat.postEphemeral", payload)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
