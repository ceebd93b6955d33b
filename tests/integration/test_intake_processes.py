"""Three ``relaydesk intake`` processes share a burst: nothing lost, nothing duplicated, and
each customer's messages on the log in the order they were published.

The customers' messages are interleaved on ``rd.inbound.sms`` (customer 0, 1, …, 49, 0, 1,
…), so one customer's messages are far apart in the stream and land in different processes'
fetches: only the cross-process ordering window (services/intake/ordering.py) keeps them in
order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import ConversationOpened, CustomerCreated, InboundMessage, MessageReceived, RoutingRequested
from events.store import EventStore
from services.bus.embedded import EmbeddedNats
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from tests.integration.system import eventually
from tests.integration.test_intake_crash import IntakeProcess

pytestmark = pytest.mark.integration

CUSTOMERS = 50
ROUNDS = 6  # messages per customer: 300 in the burst
PROCESSES = 3
DEADLINE_S = 120.0


@pytest.fixture
def intakes(clean_nats: EmbeddedNats, tmp_path: Path) -> Iterator[list[IntakeProcess]]:
    processes = []
    for n in range(PROCESSES):
        (tmp_path / f"intake{n}").mkdir()
        processes.append(IntakeProcess(clean_nats.url, tmp_path / f"intake{n}"))
    yield processes
    for process in processes:
        process.stop()


def phone(customer: int) -> str:
    return f"+1555{customer:07d}"


def sms(customer: int, round_: int) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SMproc{customer:03d}r{round_}",
        sender=phone(customer),
        recipient="+15557654321",
        text=f"message {round_} from customer {customer}: my invoice is wrong",
    )


async def test_three_intake_processes_keep_each_customer_in_order(
    private: tuple[str, NATS, EventStore], intakes: list[IntakeProcess]
) -> None:
    _, nc, store = private
    js = nc.jetstream()
    for process in intakes:
        process.start()
    for process in intakes:
        await eventually(process.started, timeout=60)

    # The burst, in this order on the stream: round by round, every customer in each round.
    for round_ in range(ROUNDS):
        for customer in range(CUSTOMERS):
            message = sms(customer, round_)
            await js.publish(
                subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:{message.provider_message_id}"}
            )

    async def all_received() -> list[MessageReceived] | None:
        received = [s.event for s in await store.read() if isinstance(s.event, MessageReceived)]
        return received if len(received) >= CUSTOMERS * ROUNDS else None

    await eventually(all_received, timeout=DEADLINE_S, every=0.5)
    for process in intakes:  # none crashed on the way
        assert process.proc is not None and process.proc.poll() is None, process.log_path.read_text()[-3000:]

    async def settled() -> bool:
        info = await js.consumer_info(subjects.INBOUND_STREAM, "intake")
        return info.num_pending == 0 and info.num_ack_pending == 0

    # Everything settled (acked): a duplicate, if any, would be on the log by now.
    await eventually(settled, timeout=60)

    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    everything = await store.read()
    received = [s.event for s in everything if isinstance(s.event, MessageReceived)]
    counts = Counter(e.provider_message_id for e in received)
    assert len(counts) == CUSTOMERS * ROUNDS, "messages lost"
    assert max(counts.values()) == 1, f"duplicated: {[k for k, n in counts.items() if n > 1][:5]}"

    out_of_order = []
    for customer in range(CUSTOMERS):
        customer_id = await directory.lookup(identity_for("sms", phone(customer)))
        assert customer_id is not None
        events = [s.event for s in await store.read_customer(customer_id)]
        kinds = Counter(type(e) for e in events)
        assert kinds[CustomerCreated] == 1 and kinds[ConversationOpened] == 1 and kinds[RoutingRequested] == 1, kinds
        order = [e.provider_message_id for e in events if isinstance(e, MessageReceived)]
        if order != [sms(customer, r).provider_message_id for r in range(ROUNDS)]:
            out_of_order.append((customer, order))
    assert not out_of_order, f"{len(out_of_order)} customers out of order, e.g. {out_of_order[:2]}"

    # The work was shared: more than one process recorded messages.
    working = [p for p in intakes if '"intake.recorded"' in p.log_path.read_text()]
    assert len(working) >= 2, [p.log_path.read_text()[-500:] for p in intakes]
