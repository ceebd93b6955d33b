"""The conformance kit fails a connector that is wrong, each class of wrong with a message that
says what to change. Each broken connector is the README's Telegram example with one fault; the
kit's test that must catch it is run against it (and must raise, naming the fault)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from aiohttp import web

from connectors.sdk import DeliveryResult, ProviderRequest, Route
from events.model import DeliverReply, InboundMessage
from tests.connectors.example_telegram import test_conformance as telegram_kit  # not by class: pytest would run it
from tests.connectors.example_telegram.connector import TelegramConnector

pytestmark = pytest.mark.integration

log = structlog.get_logger("acme")


class AnswersBeforeTheAck(TelegramConnector):
    """Its own route: answers 200 at once and publishes in the background."""

    def routes(self) -> list[Route]:
        return [Route("POST", "/telegram/webhook", handler=self.fast)]

    async def fast(self, request: ProviderRequest) -> web.StreamResponse:
        self.pending = asyncio.ensure_future(self.publisher.publish(self.parse(request)))
        self.pending.add_done_callback(lambda t: t.exception())
        return web.json_response({"ok": True})


class PublishesNothing(AnswersBeforeTheAck):
    async def fast(self, request: ProviderRequest) -> web.StreamResponse:
        return web.json_response({"ok": True})


class Trusting(TelegramConnector):
    def verify(self, request: ProviderRequest) -> None:
        return None


class NoDedupeKey(TelegramConnector):
    """A fresh id per delivery: the provider's retry is a second message."""

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return [
            msgspec_replace(m, provider_message_id=f"{m.provider_message_id}:{uuid.uuid4().hex}")
            for m in super().parse(request)
        ]


class NaiveTime(TelegramConnector):
    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return [msgspec_replace(m, at=datetime.now()) for m in super().parse(request)]  # the fault: naive


class ProvidersTime(TelegramConnector):
    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        date = request.json()["message"]["date"]
        return [msgspec_replace(m, at=datetime.fromtimestamp(date, UTC)) for m in super().parse(request)]


class LogsTheMessage(TelegramConnector):
    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        messages = super().parse(request)
        for m in messages:
            log.info("telegram.received", text=m.text)
        return messages


class LogsTheReply(TelegramConnector):
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        log.debug("telegram.sending", reply=reply)
        return await super().deliver(reply)


class CrashesOnOddShapes(TelegramConnector):
    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        request.json()["message"]["chat"]["id"]  # KeyError/TypeError on anything but a message: 500
        return super().parse(request)


class IgnoresRetryAfter(TelegramConnector):
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        result = await super().deliver(reply)
        return DeliveryResult.failed(result.reason, retryable=True) if result.retry_after is not None else result


class SentWhateverTheAnswer(TelegramConnector):
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        await super().deliver(reply)
        return DeliveryResult.sent("99")


class Sleeps(TelegramConnector):
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        time.sleep(1.5)  # noqa: ASYNC251  (the fault: a sync SDK pausing)
        return await super().deliver(reply)


class SyncHttp(TelegramConnector):
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        s = self.settings
        urllib.request.urlopen(f"{s.api_base_url}/bot{s.bot_token}/sendMessage", timeout=1.5)  # noqa: ASYNC210
        return DeliveryResult.sent("99")


class DottedChannel(TelegramConnector):
    channel: ClassVar[Any] = "acme.chat"


class UppercaseName(TelegramConnector):
    name: ClassVar[str] = "Acme"


def msgspec_replace(message: InboundMessage, **changes: Any) -> InboundMessage:
    import msgspec

    return msgspec.structs.replace(message, **changes)


def kit_for(connector: type[TelegramConnector], **config: Any) -> telegram_kit.TestTelegramConformance:
    class Kit(telegram_kit.TestTelegramConformance):
        connector_class = connector

        def config(self, provider_url: str) -> dict[str, Any]:
            return {**super().config(provider_url), **config}

    return Kit()


CASES = [
    (AnswersBeforeTheAck, "test_nats_down_is_a_retryable_failure", "NATS down but the connector answered 200"),
    (PublishesNothing, "test_valid_request_publishes_exactly_one_event", "expected one event, got 0"),
    (Trusting, "test_bad_authenticity_is_rejected_and_publishes_nothing", "forged request answered 200"),
    (NoDedupeKey, "test_same_provider_id_twice_is_one_event", "retry of one message became 2 events"),
    (
        NaiveTime,
        "test_valid_request_publishes_exactly_one_event",
        "raised TypeError: InboundMessage.at has no time zone",
    ),
    (ProvidersTime, "test_valid_request_publishes_exactly_one_event", "not when the connector received the request"),
    (LogsTheMessage, "test_valid_request_publishes_exactly_one_event", "log lines hold a customer's message"),
    (LogsTheReply, "test_outbound_reply_is_delivered_and_recorded", "log lines hold a customer's message"),
    (CrashesOnOddShapes, "test_bodies_the_provider_never_sends_are_4xx_not_5xx", "answered 500"),
    (IgnoresRetryAfter, "test_outbound_retry_after_is_honoured", "said Retry-After: 1 and was asked again"),
    (SentWhateverTheAnswer, "test_outbound_rejection_is_delivery_failed", "the provider refused the reply"),
    (Sleeps, "test_outbound_reply_is_delivered_and_recorded", "the event loop was blocked for"),
    (SyncHttp, "test_outbound_reply_is_delivered_and_recorded", "the event loop was blocked for"),
]


@pytest.mark.parametrize(("connector", "test", "said"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_the_kit_fails_a_broken_connector_saying_why(
    connector: type[TelegramConnector], test: str, said: str, tmp_path: Path
) -> None:
    kit = kit_for(connector)
    async with kit.running(tmp_path) as harness:
        with pytest.raises(AssertionError, match=said.replace("(", r"\(")):
            await getattr(kit, test)(harness)


@pytest.mark.parametrize("connector", [DottedChannel, UppercaseName])
async def test_the_kit_fails_a_name_or_channel_that_is_no_channel_name(connector: type[TelegramConnector]) -> None:
    with pytest.raises(AssertionError, match="is not a channel name"):
        await kit_for(connector).test_name_and_channel_are_channel_names()


async def test_the_example_passes_what_its_broken_variants_fail(tmp_path: Path) -> None:
    """Every check above can pass: the example itself passes each."""
    kit = telegram_kit.TestTelegramConformance()
    await kit.test_name_and_channel_are_channel_names()
    for i, test in enumerate(dict.fromkeys(test for _, test, _ in CASES)):
        async with kit.running(tmp_path / str(i)) as harness:
            await getattr(kit, test)(harness)
