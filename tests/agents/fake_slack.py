"""A fake Slack, from Slack's documented payloads, both ways:

- the Web API the delivery service and the API call (``chat.postMessage``, ``chat.update``,
  ``chat.delete``, ``chat.postEphemeral``): ``{"ok": true, "channel", "ts", …}``, ``{"ok":
  false, "error": "invalid_auth"}`` for another token, ``channel_not_found``,
  ``message_not_found`` (never posted, or deleted), ``cant_update_message`` /
  ``cant_delete_message`` for a message the bot did not post (a bot token reaches its own
  messages only: ``user_message``), and a scripted HTTP 429 with ``Retry-After``;
- what Slack sends the app, signed like Slack signs it (``v0=`` HMAC-SHA256 of
  ``v0:<timestamp>:<body>``): ``block_actions`` interactions (form field ``payload=`` JSON),
  Events API ``event_callback`` ``message`` events in a thread, ``url_verification``.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
from aiohttp import web

from services.bus.embedded import free_port
from services.delivery.slack_signing import headers as slack_headers

BOT_TOKEN = "xoxb-test-0000-relaydesk"
SIGNING_SECRET = "slack-signing-secret-test-0123456789"
BOT_ID = "B0RELAYDESK"


@dataclass
class Posted:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    versions: list[list[dict[str, Any]]] = field(default_factory=list)  # blocks after each chat.update
    user: str | None = None  # who posted it: None for the bot (the app), else a Slack user id

    def header(self) -> str:
        return str(next(b["text"]["text"] for b in self.blocks if b["type"] == "header"))

    def buttons(self) -> dict[str, dict[str, Any]]:
        """action_id -> button, for the buttons that act (not links)."""
        return {e["action_id"]: e for b in self.blocks if b["type"] == "actions" for e in b["elements"] if "value" in e}


@dataclass
class FakeSlack:
    url: str = ""
    messages: list[Posted] = field(default_factory=list)
    deleted: list[Posted] = field(default_factory=list)  # removed by chat.delete, oldest first
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)  # (method, HTTP status)
    # Scripted answers per method, used first: (HTTP status, headers, JSON body).
    script: dict[str, list[tuple[int, dict[str, str], dict[str, Any]]]] = field(default_factory=dict)
    channels: set[str] = field(default_factory=lambda: {"C0SUPPORT"})
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        scripted = self.script.get(method)
        if scripted:
            status, headers, body = scripted.pop(0)
            self.calls.append((method, status))
            return web.json_response(body, status=status, headers=headers)
        self.calls.append((method, 200))
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        args = msgspec.json.decode(await request.read())
        channel = str(args.get("channel", ""))
        if channel.startswith("U"):  # a user id: the app's DM with that user
            channel = "D" + channel[1:]
        elif channel not in self.channels and not channel.startswith("D"):
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if method == "chat.postMessage":
            text, blocks = args.get("text", ""), args.get("blocks", [])
            posted = Posted(channel, self._new_ts(), text, blocks, args.get("thread_ts"))
            self.messages.append(posted)
            return web.json_response(
                {"ok": True, "channel": channel, "ts": posted.ts, "message": {"text": posted.text, "ts": posted.ts}}
            )
        if method in ("chat.update", "chat.delete"):
            found = next((m for m in self.messages if m.channel == channel and m.ts == args.get("ts")), None)
            if found is None:
                return web.json_response({"ok": False, "error": "message_not_found"})
            if found.user is not None:  # a person's message: a bot token cannot touch it
                verb = "update" if method == "chat.update" else "delete"
                return web.json_response({"ok": False, "error": f"cant_{verb}_message"})
            if method == "chat.delete":
                self.messages.remove(found)
                self.deleted.append(found)
                return web.json_response({"ok": True, "channel": channel, "ts": found.ts})
            found.text, found.blocks = args.get("text", ""), args.get("blocks", [])
            found.versions.append(found.blocks)
            return web.json_response({"ok": True, "channel": channel, "ts": found.ts, "text": found.text})
        if method == "chat.postEphemeral":
            self.ephemerals.append(args)
            return web.json_response({"ok": True, "message_ts": self._new_ts()})
        return web.json_response({"ok": False, "error": "unknown_method"})

    def user_message(self, user: str, parent: Posted, text: str) -> Posted:
        """``user`` writes ``text`` in ``parent``'s thread (shown in Slack; the app did not post it)."""
        posted = Posted(parent.channel, self._new_ts(), text, [], parent.ts, user=user)
        self.messages.append(posted)
        return posted

    # -- what the agents see --------------------------------------------------------------

    def top_level(self, conversation_id: str) -> list[Posted]:
        """The conversation's own messages (their fallback text names it), not thread posts."""
        return [m for m in self.messages if m.thread_ts is None and conversation_id in m.text]

    def in_thread(self, parent: Posted) -> list[Posted]:
        return [m for m in self.messages if m.thread_ts == parent.ts and m.channel == parent.channel]

    def ephemerals_for(self, user: str) -> list[str]:
        return [str(e["text"]) for e in self.ephemerals if e.get("user") == user]

    # -- what Slack sends the app ---------------------------------------------------------

    async def click(
        self,
        http: aiohttp.ClientSession,
        app_url: str,
        user: str,
        message: Posted,
        action_id: str,
        *,
        action_ts: str | None = None,
        secret: str = SIGNING_SECRET,
        at: int | None = None,
    ) -> int:
        """A block_actions interaction: ``user`` pressed the button ``action_id`` of ``message``."""
        button = message.buttons()[action_id]
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
            "api_app_id": "A0RELAYDESK",
            "token": "verification-token-deprecated",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex[:8]}",
            "team": {"id": "T0TEAM", "domain": "example"},
            "channel": {"id": message.channel, "name": "support"},
            "message": {"type": "message", "ts": message.ts, "text": message.text, "blocks": message.blocks},
            "response_url": f"{self.url}/actions/T0TEAM/1/xyz",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "b1",
                    "text": button["text"],
                    "value": button["value"],
                    "type": "button",
                    "action_ts": action_ts or f"{time.time():.6f}",
                }
            ],
        }
        body = urlencode({"payload": msgspec.json.encode(payload).decode()}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_headers(secret, body, at)}
        async with http.post(app_url + "/slack/interactions", data=body, headers=headers) as r:
            return r.status

    async def event(
        self,
        http: aiohttp.ClientSession,
        app_url: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        secret: str = SIGNING_SECRET,
    ) -> tuple[int, Any]:
        """An Events API event_callback wrapping ``event``."""
        body = msgspec.json.encode(
            {
                "token": "verification-token-deprecated",
                "team_id": "T0TEAM",
                "api_app_id": "A0RELAYDESK",
                "event": event,
                "type": "event_callback",
                "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
                "event_time": int(time.time()),
                "authorizations": [{"team_id": "T0TEAM", "user_id": "U0BOT", "is_bot": True}],
            }
        )
        return await self.send_event_body(http, app_url, body, retry_num=retry_num, secret=secret)

    async def send_event_body(
        self,
        http: aiohttp.ClientSession,
        app_url: str,
        body: bytes,
        *,
        retry_num: int | None = None,
        secret: str = SIGNING_SECRET,
        at: int | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **slack_headers(secret, body, at)}
        if retry_num is not None:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        async with http.post(app_url + "/slack/events", data=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def thread_reply(
        self, http: aiohttp.ClientSession, app_url: str, user: str, parent: Posted, text: str, **kwargs: Any
    ) -> tuple[int, Any]:
        """``user`` writes ``text`` in the thread of ``parent`` (a message event with thread_ts)."""
        event = {
            "type": "message",
            "channel": parent.channel,
            "user": user,
            "text": text,
            "ts": self._new_ts(),
            "thread_ts": parent.ts,
            "event_ts": self._new_ts(),
            "channel_type": "im" if parent.channel.startswith("D") else "channel",
        }
        return await self.event(http, app_url, event, **kwargs)


@contextlib.asynccontextmanager
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/{method}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
