"""The reply relay after a nats-server restart (found by a chaos audit).

``RD_OUTBOUND`` drops a reply queued twice by its ``Nats-Msg-Id`` for a day, but the server keeps
that window in memory and rebuilds it at a restart from the messages still stored: a reply
already delivered was acknowledged, so deleted from the work queue, and its id is forgotten. The
relay (``services/api/replies.py``) queued such a reply again whenever its own fold still held
it as waiting: intake had not recorded the connector's outcome yet, or this API's view had not
read it yet. The customer got the reply twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from events import subjects
from events.model import ConversationOpened, MessageSent, ReplyRequested
from events.store import Append, EventStore, StoredEvent
from services.api.common import ApiDeps
from services.api.readmodel import LiveState
from services.api.replies import PendingReplies, ReplyRelay
from services.bus.embedded import EmbeddedNats
from services.identity import IdentityDirectory
from services.intake.settling import consumer_config
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import eventually, running_system, system_config
from tests.integration.test_replies import reply, sent_for, sms_conversation

WITHOUT_INTAKE = ("router", "projector", "api", "delivery")


async def test_a_reply_sent_before_a_nats_restart_is_not_sent_again_while_intake_has_not_recorded_it(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str], log_lines: list[dict[str, Any]]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    config.api = msgspec.structs.replace(config.api, reply_requeue_seconds=0.3)
    with_fake_twilio(config, base_url)
    phone = "+15551230091"
    async with running_system(config, clean_nats) as system:
        customer_id, conv = await sms_conversation(system, "SM" + "e" * 32, phone)
        inbound = await system.inbound_count()

    # Intake stopped (lagging, restarting): the connector's outcome waits on rd.inbound.
    async with running_system(config, clean_nats, services=WITHOUT_INTAKE) as system:
        await reply(system, conv, "We refunded the second charge.")
        await eventually(lambda: _at_least(fake.messages, 1), timeout=30)
        await eventually(lambda: _inbound_above(system.inbound_count, inbound), timeout=30)  # the outcome

        # Before the restart a reply queued again while its connector is still sending it (the
        # relay sees no outcome yet: 0.3 s here, 30 s by default) is dropped by that window, and
        # the one send asserted below says so; after it, the relay must not queue it again.
        restarted_at = len(log_lines)
        await clean_nats.astop()  # RD_OUTBOUND's duplicate window goes with it
        await clean_nats.astart()

        async def deferred() -> bool | None:
            return any(line["event"] == "reply.requeue_deferred" for line in log_lines) or None

        async def deferred_or_sent_again() -> bool | None:
            return True if len(fake.messages) > 1 else await deferred()

        await eventually(deferred_or_sent_again, timeout=30)
        assert [m["Body"] for m in fake.messages] == ["We refunded the second charge."]

    async with running_system(config, clean_nats) as system:  # intake back: the outcome is recorded once
        sent = await eventually(lambda: _sent(system, customer_id), timeout=30)
        assert len(sent) == 1
        queued_again = [line for line in log_lines[restarted_at:] if line["event"] == "reply.queued_again"]
        assert queued_again == []
    assert [m["Body"] for m in fake.messages] == ["We refunded the second charge."]


async def test_a_reply_whose_outcome_the_view_has_not_read_yet_is_not_queued_again(
    clean_nc: NATS, own_store: EventStore
) -> None:
    """The log has the reply's outcome; this API's fold does not yet (a view catching up after
    a pause or at its start). Intake has recorded everything. Nothing is queued."""
    js = clean_nc.jetstream()
    await js.add_consumer(subjects.INBOUND_STREAM, consumer_config())  # intake's, with nothing to do
    at = datetime.now(UTC) - timedelta(minutes=5)
    customer, conversation = "cu_relay1", "cv_relay1"
    await own_store.append(
        Append(
            ConversationOpened(
                at=at, customer_id=customer, conversation_id=conversation, channel="sms", contact="+15551230092"
            )
        )
    )
    requested = ReplyRequested(
        at=at, customer_id=customer, conversation_id=conversation, channel="sms", reply_id="rp_relay1", text="hello"
    )
    seq = await own_store.append(Append(requested))
    await own_store.append(
        Append(
            MessageSent(at=at, customer_id=customer, conversation_id=conversation, channel="sms", reply_id="rp_relay1")
        )
    )

    pending = PendingReplies()  # the view has read the request, not its outcome
    pending.apply(StoredEvent(seq=seq, subject=subjects.conversation(customer, conversation), event=requested))
    directory = IdentityDirectory(await js.create_key_value(bucket="rd_identity_relay_test"))
    deps = ApiDeps(
        nc=clean_nc, store=own_store, live=LiveState(own_store), timelines=None, directory=directory, token="t"
    )
    relay = ReplyRelay(deps, pending, 30.0, lambda: datetime.now(UTC))

    assert await relay.sweep() == 0
    outbound = await js.stream_info(subjects.OUTBOUND_STREAM)
    assert outbound.state.messages == 0
    assert "rp_relay1" not in pending.by_id


async def _sent(system: Any, customer_id: str) -> list[MessageSent] | None:
    return await sent_for(system, customer_id) or None


async def _at_least(items: list[Any], n: int) -> bool | None:
    return len(items) >= n or None


async def _inbound_above(count: Any, n: int) -> bool | None:
    return await count() > n or None
