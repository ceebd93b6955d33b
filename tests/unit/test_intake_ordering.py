"""The cross-process ordering window of intake (services/intake/ordering.py), on fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from events.codec import encode
from events.model import InboundMessage
from services.intake.ordering import OrderingWindow


def sms(seq: int, sender: str, auto: bool = False) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SM{seq}",
        sender=sender,
        text="hi",
        metadata={"auto": "1"} if auto else {},
    )


@dataclass
class FakeStream:
    """RD_INBOUND as seen through consumer info and batched direct gets."""

    messages: dict[int, InboundMessage]
    floor: int = 0
    reads: list[int] = field(default_factory=list)  # every seq handed out by a direct get

    async def consumer_info(self, stream: str, durable: str) -> Any:
        return SimpleNamespace(ack_floor=SimpleNamespace(stream_seq=self.floor))

    async def get(self, stream: str, filter_subject: str, seq: int, batch: int) -> Any:
        got = [(s, "rd.inbound.sms", encode(m), {}) for s, m in sorted(self.messages.items()) if s >= seq][:batch]
        self.reads.extend(s for s, *_ in got)
        more = any(s > got[-1][0] for s in self.messages) if got else False
        return got, more


class FakeIntake:
    def identity_of(self, message: InboundMessage) -> str | None:
        return "sms:" + message.sender


def window(stream: FakeStream) -> OrderingWindow:
    return OrderingWindow(stream, stream, FakeIntake())  # type: ignore[arg-type]


async def test_a_later_message_waits_for_the_same_senders_earlier_one_held_elsewhere() -> None:
    senders = {1: "+1", 2: "+2", 3: "+1", 4: "+3", 5: "+1"}
    stream = FakeStream({seq: sms(seq, who) for seq, who in senders.items()})
    # This process got 5; 1-4 are held by others.
    earlier = await window(stream).earlier([(5, stream.messages[5])], held=())
    assert earlier == {5: (("sms", "SM1"), ("sms", "SM3"))}


async def test_own_and_held_messages_and_automatic_mail_order_nothing() -> None:
    stream = FakeStream({1: sms(1, "+1"), 2: sms(2, "+1", auto=True), 3: sms(3, "+1"), 4: sms(4, "+1")})
    # 1 is this process's own (held), 2 is automatic, 3 is in the same batch: nothing to wait for.
    got = await window(stream).earlier([(3, stream.messages[3]), (4, stream.messages[4])], held={1})
    assert got == {}


async def test_each_message_is_read_once_per_process_and_the_floor_forgets() -> None:
    stream = FakeStream({seq: sms(seq, f"+{seq % 4}") for seq in range(1, 41)})
    w = window(stream)
    await w.earlier([(20, stream.messages[20])], held=())
    first = list(stream.reads)
    assert set(first) >= set(range(1, 20))
    # The next batch: only what was not seen before is read.
    got = await w.earlier([(40, stream.messages[40])], held=())
    assert not set(stream.reads[len(first) :]) & set(range(1, 21))
    assert got[40][0] == ("sms", "SM4")  # +0's earlier messages, 4, 8, …, 36
    stream.floor = 30
    got = await w.earlier([(40, stream.messages[40])], held=())
    assert got == {40: (("sms", "SM32"), ("sms", "SM36"))}  # at or below the floor: acked, settled
