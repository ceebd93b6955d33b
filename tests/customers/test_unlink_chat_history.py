"""Unlinking a web chat address takes the customer's frames from its catch-up history
(``RD_CHAT``). The history is kept per address (a visitor id): before, its next holder saw the
earlier customer's messages and replies in the widget, and their export listed them, until that
customer was erased. Now the unlink takes the family's frames (matched as an erasure matches
them) and leaves another customer's. Over a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from connectors.chat.history import ChatHistory, HistoryUnavailable
from connectors.chat.tokens import provider_message_id as chat_message_id
from events.model import ConversationOpened, MessageReceived, ReplyRequested
from events.store import Append, EventStore
from services.customers import unlink as unlink_module
from services.customers.erase import ErasureTargets
from services.customers.service import CustomerError, Customers
from services.customers.unlink import unlink
from tests.customers.helpers import customer, customers_of

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
async def history(nc: NATS, uid: str) -> AsyncIterator[ChatHistory]:
    js = nc.jetstream()
    chat = ChatHistory(stream=f"RD_CHAT_U{uid}", prefix=f"u{uid}.chat", js=js)
    await chat.ensure()
    try:
        yield chat
    finally:
        await js.delete_stream(chat.stream)


def _targets(history: ChatHistory) -> ErasureTargets:
    return ErasureTargets(chat_stream=history.stream, chat_subject=history.prefix)


async def _visitor_wrote(store: EventStore, history: ChatHistory, who: str, visitor: str, key: str) -> None:
    """A message of ``who`` on the visitor's chat: its frame and its ``MessageReceived``."""
    await history.append(visitor, "message", key, f"{key}: hello")
    said = MessageReceived(
        at=AT,
        customer_id=who,
        conversation_id=f"cv_{key}",
        channel="chat",
        message_id=f"msg_{key}",
        provider_message_id=chat_message_id(visitor, key),
        text=f"{key}: hello",
    )
    await store.append(Append(said))


async def _ann_with_a_chat(customers: Customers, store: EventStore, history: ChatHistory, visitor: str) -> str:
    """Ann on the visitor id: her message, a reply to her and her conversation's ``closed``."""
    ann = await customer(customers, f"chat:{visitor}")
    conversation = f"cv_ann-{visitor}"
    opened = ConversationOpened(at=AT, customer_id=ann, conversation_id=conversation, channel="chat", contact=visitor)
    await store.append(Append(opened))
    await _visitor_wrote(store, history, ann, visitor, "m-ann")
    await history.append(visitor, "reply", f"rp_{visitor}", "we are on it")
    answered = ReplyRequested(
        at=AT, customer_id=ann, conversation_id=conversation, channel="chat", reply_id=f"rp_{visitor}", text="on it"
    )
    await store.append(Append(answered))
    await history.append(visitor, "closed", conversation, "")
    return ann


async def test_unlinking_a_chat_address_takes_the_customers_frames_and_leaves_anothers(
    nc: NATS, store: EventStore, history: ChatHistory, uid: str, log_lines: list[dict[str, Any]]
) -> None:
    customers = await customers_of(nc, store)
    visitor = f"v-{uid}"
    ann = await _ann_with_a_chat(customers, store, history, visitor)
    # A frame on the same address that is not Ann's (a customer the address was once taken from).
    cy = await customer(customers, f"chat:elsewhere-{uid}")
    await _visitor_wrote(store, history, cy, visitor, "m-cy")
    assert len(await history.read(visitor, 0)) == 4

    since = len(log_lines)
    answer = await unlink(
        customers, ann, f"chat:{visitor}", "operator", reason="shared computer", targets=_targets(history)
    )
    # Her conversation on the visitor id is resolved first: no reply of an agent lands after the purge.
    assert (answer["unlinked"], answer["already_unlinked"], answer["conversations_resolved"]) == (True, False, 1)
    assert [frame.key for frame in await history.read(visitor, 0)] == ["m-cy"]
    done = [line for line in log_lines[since:] if line["event"] == "customers.unlinked"]
    assert [line["chat_frames_removed"] for line in done] == [3]
    assert visitor not in repr(done)  # by count, never the address in clear

    # Again (a script run twice): nothing more goes, the other customer's frame stays.
    again = await unlink(customers, ann, f"chat:{visitor}", "operator", targets=_targets(history))
    assert (again["already_unlinked"], again["conversations_resolved"]) == (True, 0)
    assert [frame.key for frame in await history.read(visitor, 0)] == ["m-cy"]


async def test_a_retry_after_a_crash_before_the_purge_finishes_it(
    nc: NATS, store: EventStore, history: ChatHistory, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    visitor = f"v-{uid}"
    ann = await _ann_with_a_chat(customers, store, history, visitor)

    async def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(unlink_module, "purge_chat_frames", crash)
    with pytest.raises(RuntimeError):
        await unlink(customers, ann, f"chat:{visitor}", "operator", targets=_targets(history))
    monkeypatch.undo()
    assert (await customers.facts(ann)).unlinked == [f"chat:{visitor}"]
    # Meanwhile the visitor id's next holder writes.
    bob = await customer(customers, f"chat:{visitor}")
    assert bob != ann
    await _visitor_wrote(store, history, bob, visitor, "m-bob")

    answer = await unlink(customers, ann, f"chat:{visitor}", "operator", targets=_targets(history))
    assert answer["already_unlinked"] is True
    assert [frame.key for frame in await history.read(visitor, 0)] == ["m-bob"]


async def test_no_chat_connector_deployed_does_not_stop_an_unlink(nc: NATS, store: EventStore, uid: str) -> None:
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"chat:v-{uid}")
    nowhere = ErasureTargets(chat_stream=f"RD_CHAT_NONE{uid}", chat_subject=f"none{uid}.chat")
    answer = await unlink(customers, ann, f"chat:v-{uid}", "operator", targets=nowhere)
    assert answer["unlinked"] is True
    assert await customers.directory.lookup(f"chat:v-{uid}") is None


async def test_a_history_that_does_not_answer_is_a_503_and_the_unlink_stands(
    nc: NATS, store: EventStore, history: ChatHistory, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    visitor = f"v-{uid}"
    ann = await _ann_with_a_chat(customers, store, history, visitor)

    async def away(*args: Any, **kwargs: Any) -> int:
        raise HistoryUnavailable("history stream did not answer: TimeoutError")

    monkeypatch.setattr(ChatHistory, "erase", away)
    with pytest.raises(CustomerError) as refused:
        await unlink(customers, ann, f"chat:{visitor}", "operator", targets=_targets(history))
    assert refused.value.status == 503
    assert visitor not in refused.value.reason
    assert (await customers.facts(ann)).unlinked == [f"chat:{visitor}"]
    monkeypatch.undo()
    assert (await unlink(customers, ann, f"chat:{visitor}", "operator", targets=_targets(history)))["already_unlinked"]
    assert await history.read(visitor, 0) == []
