"""The delivery service starts from a snapshot of what it folded, not from the start of the
log, and still notifies exactly as if it had folded everything: the personal facts the
snapshot leaves out (contact, preview, subject) are read back from the conversation's own
subject when an event first touches it."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import subjects
from events.model import ConversationOpened, MessageReceived, Requirements, RoutingRequested
from events.store import Append, EventStore, StoredEvent
from router import snapshot
from router.policy import RouterPolicy
from services.bus.embedded import EmbeddedNats
from services.delivery.notices import Facts, Notice
from services.delivery.settings import Endpoint
from services.delivery.snapshots import SNAPSHOT_NAME
from services.state_snapshots import read_state
from tests.unit.router.test_properties import OPS, POLICIES, World, act

from .helpers import agent_system, agents_config, eventually, holds, receiver

URLS = {"console_url": "http://console", "api_url": "http://api"}


def _with_personal_facts(world: World) -> list[StoredEvent]:
    """The world's log, each contact, text and subject told apart (the world writes "x")."""
    out = []
    for seq, subject, event in world.log.entries:
        if isinstance(event, ConversationOpened):
            event = msgspec.structs.replace(event, contact=f"+1555{seq:07d}")
        elif isinstance(event, MessageReceived):
            metadata = {"subject": f"subject {seq}"} if seq % 3 else {}
            event = msgspec.structs.replace(event, text=f"line {seq}\nmore\nand more\ncut", metadata=metadata)
        out.append(StoredEvent(seq=seq, subject=subject, event=event))
    return out


def _notices(facts: Facts, events: list[StoredEvent]) -> list[Notice]:
    return [notice for stored in events for notice in facts.apply(stored)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=60),
    cut=st.floats(0, 1),
)
def test_notices_after_a_snapshot_are_those_of_a_fold_of_the_whole_log(
    data: st.DataObject, policy: RouterPolicy, ops: list[str], cut: float
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 4))):
        act(world, data, "hire")
    for op in ops:
        act(world, data, op)
    log = _with_personal_facts(world)
    at = int(cut * len(log))
    whole = Facts(**URLS)
    _notices(whole, log[:at])
    expected = _notices(whole, log[at:])

    before = Facts(**URLS)
    _notices(before, log[:at])
    restarted = Facts(**URLS)
    restarted.restore(snapshot.load(snapshot.dump(before.state)))
    by_subject: dict[str, list[StoredEvent]] = defaultdict(list)
    for stored in log:
        by_subject[stored.subject].append(stored)
    got: list[Notice] = []
    for stored in log[at:]:
        for cid in restarted.unread_in([stored]):  # as the service reads them: the conversation's subject
            conv = restarted.state.conversations[cid]
            restarted.absorb(cid, by_subject[subjects.conversation(conv.customer_id, cid)])
        got += restarted.apply(stored)
    assert got == expected
    # Nothing is kept for a conversation that ended meanwhile.
    assert restarted.unread <= set(restarted.state.conversations)
    assert set(restarted.contacts) <= set(whole.contacts)


# -- over a real nats-server ---------------------------------------------------------------


def _email(customer: str, cid: str, n: int, text: str, *, subject: str) -> MessageReceived:
    return MessageReceived(
        at=datetime.now(UTC),
        customer_id=customer,
        conversation_id=cid,
        channel="email",
        message_id=f"m{n}-{cid}",
        provider_message_id=f"p{n}-{cid}",
        text=text,
        language="en",
        metadata={"subject": subject},
    )


async def _open_email(store: EventStore, customer: str, cid: str) -> None:
    now = datetime.now(UTC)
    seq = await store.append(
        Append(
            ConversationOpened(
                at=now, customer_id=customer, conversation_id=cid, channel="email", contact="+15557654321"
            ),
            expected=0,
        )
    )
    seq = await store.append(
        Append(
            _email(customer, cid, 1, "Where is my parcel?", subject="Parcel 42"),
            expected=seq,
        )
    )
    requirements = Requirements(skills={"billing": 1}, language="en")
    await store.append(
        Append(
            RoutingRequested(
                at=now, customer_id=customer, conversation_id=cid, channel="email", requirements=requirements
            ),
            expected=seq,
        )
    )


@pytest.mark.integration
async def test_a_restarted_delivery_service_reads_on_from_its_snapshot(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver() as hook:
        endpoints = (Endpoint(kind="webhook", id="all-hook", agent="*", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, snapshot_every=1)
        async with agent_system(config, clean_nats, services=("router", "api")) as s:

            def notices(kind: str) -> list[dict[str, object]]:
                return [body for seen in hook.ok() if (body := seen.json())["notice"] == kind]

            stop = asyncio.Event()
            first = s.delivery_service(config, "first")
            running = asyncio.create_task(first.run(stop))
            customer, cid = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
            try:
                await _open_email(s.store, customer, cid)
                await eventually(holds(lambda: notices("assigned")))  # e-mail is assigned, not offered
                end = await s.store.last_seq()

                async def saved_through_the_end() -> bool:
                    state = await read_state(s.store.js, SNAPSHOT_NAME, reader="test")
                    return state is not None and state.last_seq >= end

                await eventually(saved_through_the_end)
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
            assert first.snapshots.started_from == 0  # nothing saved before it: it read the whole log

            # While no delivery service runs, the customer writes again.
            state = await read_state(s.store.js, SNAPSHOT_NAME, reader="test")
            assert state is not None and cid in state.conversations
            await s.store.append(Append(_email(customer, cid, 2, "Any news?\nStill waiting", subject="Re: Parcel 42")))
            stop = asyncio.Event()
            second = s.delivery_service(config, "second")
            running = asyncio.create_task(second.run(stop))
            try:
                [message] = await eventually(holds(lambda: notices("message")))
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
            assert second.snapshots.started_from == state.last_seq
            # What the snapshot does not hold was read back from the conversation's subject:
            assert message["customer"]["contact"] == "+155•••4321"  # type: ignore[index]
            assert second.facts.subjects[cid] == "Parcel 42"  # an e-mail notice's subject: the first, as before
            assert message["preview"] == "Any news?\nStill waiting"
            assert len(notices("assigned")) == 1  # not sent again
