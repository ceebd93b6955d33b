"""Telegram Bot API connector: the whole integration is this file.

setWebhook(url=https://<public>/telegram/webhook, secret_token=<secret_token>) makes Telegram
send every update with ``X-Telegram-Bot-Api-Secret-Token``; replies go through sendMessage.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from connectors.sdk import (
    Connector,
    ConnectorSettings,
    DeliveryResult,
    Malformed,
    ProviderRequest,
    Unauthentic,
)
from connectors.sdk.retry_after import retry_after_seconds
from events.model import Channel, DeliverReply, InboundMessage

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CAPTION_LIMIT = 1024  # sendDocument's caption


class TelegramSettings(ConnectorSettings, kw_only=True):
    port: int = 8084
    bot_token: str = ""  # "<bot id>:<secret>" from @BotFather
    secret_token: str = ""  # the secret_token given to setWebhook
    api_base_url: str = "https://api.telegram.org"


class TelegramConnector(Connector):
    name: ClassVar[str] = "telegram"
    channel: ClassVar[Channel] = "telegram"  # its own channel: its own queue, identities and capacity
    provider: ClassVar[str] = "telegram"
    Settings: ClassVar[type[ConnectorSettings]] = TelegramSettings
    inbound_paths: ClassVar[tuple[str, ...]] = ("/telegram/webhook",)

    settings: TelegramSettings

    @property
    def bot_id(self) -> str:
        return self.settings.bot_token.split(":", 1)[0]

    def verify(self, request: ProviderRequest) -> None:
        expected = self.settings.secret_token.encode()
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not expected or not hmac.compare_digest(given, expected):
            raise Unauthentic(f"missing or wrong {SECRET_HEADER}")

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        update = request.json()
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise Malformed("not a Telegram update: update_id missing")
        message: Any = update.get("message")
        if not isinstance(message, dict):
            return []  # edits, callback queries, member updates: nothing to route
        chat, sender = message.get("chat"), message.get("from") or {}
        if not isinstance(chat, dict) or "id" not in chat:
            raise Malformed("message.chat.id missing")
        date = message.get("date")
        return [
            InboundMessage(
                at=self.now(),  # when it arrived: Telegram's own time (a retry's is old) is metadata
                channel=self.channel,
                provider=self.provider,
                # update_id is unique per bot: Telegram's retries of one update carry the same.
                # No "telegram:" here: the SDK prefixes the channel (Nats-Msg-Id telegram:<bot>:<update>).
                provider_message_id=f"{self.bot_id}:{update['update_id']}",
                sender=str(chat["id"]),
                sender_name=sender.get("first_name") if isinstance(sender, dict) else None,
                text=message.get("text") or message.get("caption") or "",
                metadata={
                    "platform": "telegram",
                    "chat_id": str(chat["id"]),
                    "message_id": str(message.get("message_id", "")),
                    "provider_at": datetime.fromtimestamp(date, UTC).isoformat() if _epoch(date) else "",
                },
            )
        ]

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        if reply.template is not None:
            return DeliveryResult.failed("telegram has no message templates")
        body: dict[str, Any] = {"chat_id": reply.contact}
        if not reply.attachments:
            method, body["text"] = "sendMessage", reply.text
        elif len(reply.attachments) == 1 and len(reply.text) <= CAPTION_LIMIT:
            # Telegram fetches the file from the short-lived link itself; the text is its caption.
            method, body["document"] = "sendDocument", reply.attachments[0].url
            if reply.text:
                body["caption"] = reply.text
        else:
            return DeliveryResult.failed(f"telegram: one file per reply, text up to {CAPTION_LIMIT} characters")
        s = self.settings
        url = f"{s.api_base_url.rstrip('/')}/bot{s.bot_token}/{method}"
        async with self.http.post(url, json=body) as resp:
            data: Any = await resp.json(content_type=None)
        if isinstance(data, dict) and data.get("ok"):
            return DeliveryResult.sent(str(data["result"]["message_id"]))
        reason = f"telegram {resp.status}: {data.get('description') if isinstance(data, dict) else 'no detail'}"
        # A 429 says when to come back (the header, or parameters.retry_after): not sooner.
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is None and isinstance(data, dict) and isinstance(data.get("parameters"), dict):
            wait = retry_after_seconds(str(data["parameters"].get("retry_after", "")))
        return DeliveryResult.failed(reason, retryable=resp.status == 429 or resp.status >= 500, retry_after=wait)


def _epoch(value: object) -> bool:
    return isinstance(value, int) and 0 <= value < 2**35  # datetime.fromtimestamp refuses beyond year 9999
