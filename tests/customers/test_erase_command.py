"""``relaydesk customers erase``: the customer's family is erased on request, each step shown,
the counts printed; refused without confirmation or for an unknown customer; safe to run again
(over a real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import msgspec
import nats
import pytest
from nats.js.errors import KeyNotFoundError

from events import subjects
from events.codec import encode
from events.model import CustomerCreated, CustomerErased, InboundMessage, MessageReceived
from events.parking import ParkedMessage, ParkingLot
from events.personal import ERASED
from events.store import Append, EventStore
from events.streams import IDEMPOTENCY_BUCKET, ensure_streams
from services import logs
from services.api.idempotency import Record, Sealer, command_refs
from services.bootstrap import event_store
from services.cli import main
from services.customers.service import Customers
from services.delivery import records
from services.identity import IdentityDirectory

pytestmark = pytest.mark.integration


def run_cli(*args: str) -> int:
    return main(["customers", *args, "--log-level", "warning"])


async def seed(url: str, uid: str) -> tuple[str, str]:
    """Two customers of one person (the second merged into the first), each with a raw SMS."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        customers = Customers(event_store(nc), IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)))
        ids = []
        for n in (1, 2):
            identity = f"phone:+1555{int(uid[:6], 16) % 1_000_000:06d}{n}"
            customer_id, _ = await customers.directory.resolve(identity)
            await customers.create(customer_id, identity)
            message = InboundMessage(
                at=datetime.now(UTC),
                channel="sms",
                provider="twilio",
                provider_message_id=f"SM{uid}{n}",
                sender=identity.removeprefix("phone:"),
                text=f"erase-me-{uid}-{n}",
            )
            await js.publish(subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:SM{uid}{n}"})
            ids.append(customer_id)
        await customers.merge(ids[0], ids[1], "test")
        # Where else she lands: a notice to an agent's tool, a dead letter, a kept API answer.
        deliveries = await records.bucket(js)
        now = datetime.now(UTC)
        record = records.DeliveryRecord(
            id=f"dl-{uid}", endpoint_id="e", kind="webhook", agent_id="ava", notice="offer", seq=1,
            customer_id=ids[1], created_at=now, updated_at=now, body={"preview": f"erase-me-{uid}"},
        )  # fmt: skip
        await deliveries.put(f"dl-{uid}", records.encode(record))
        parked = ParkedMessage(
            stream=subjects.INBOUND_STREAM, seq=10**9 + int(uid[:6], 16), subject="rd.inbound.sms",
            kind="dead_letter", reader="intake", error="x", parked_at=now, data=encode(message),
        )  # fmt: skip
        await ParkingLot(js).park(parked)
        kept = await js.key_value(IDEMPOTENCY_BUCKET)
        # As the API keeps one: the answer sealed (only the ids it names in clear).
        answer = msgspec.json.encode({"customer_id": ids[0], "identity": f"email:{uid}@example.com"})
        record = Record(
            state="done",
            fingerprint="f",
            started_at=0.0,
            body=Sealer(b"the API's signing key").seal(f"k{uid}", answer),
            refs=command_refs(f"/v1/customers/{ids[0]}/identities", b"", answer),
        )
        await kept.put(f"k{uid}", msgspec.json.encode(record))
        return ids[0], ids[1]
    finally:
        await nc.close()


async def after(url: str, uid: str, survivor: str) -> tuple[list[str], list[object], str | None]:
    """Texts of the raw SMS left, the survivor's events (opened), who has the first number now."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.INBOUND_STREAM)
        texts = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                raw = await js.get_msg(subjects.INBOUND_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            text = msgspec.json.decode(raw.data or b"{}").get("text", "")
            if uid in text:
                texts.append(text)
        events = [s.event for s in await event_store(nc).read_customer(survivor)]
        directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
        owner = await directory.lookup(f"phone:+1555{int(uid[:6], 16) % 1_000_000:06d}1")
        for bucket, key in ((records.BUCKET, f"dl-{uid}"), (IDEMPOTENCY_BUCKET, f"k{uid}")):
            with contextlib.suppress(KeyNotFoundError):
                await (await js.key_value(bucket)).get(key)
                texts.append(f"{bucket} still has {key}")
        if any(uid.encode() in p.data for p in await ParkingLot(js).list()):
            texts.append("a dead letter of hers is still parked")
        return texts, events, owner
    finally:
        await nc.close()


def test_erase_removes_the_family_and_says_what_went(
    nats_url: str, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    survivor, merged = asyncio.run(seed(nats_url, uid))

    # Without a terminal and without --yes nothing happens; an unknown customer is refused.
    assert run_cli("erase", survivor, "--reason", "ticket 7", "--nats-url", nats_url) == 2
    assert run_cli("erase", "cu_nobody_" + uid, "--reason", "ticket 7", "--yes", "--nats-url", nats_url) == 1
    assert "refused (404)" in capsys.readouterr().err
    assert len(asyncio.run(after(nats_url, uid, survivor))[0]) == 5

    # Asking for the merged-away customer erases the whole family.
    assert run_cli("erase", merged, "--reason", "ticket 7", "--yes", "--nats-url", nats_url) == 0
    out = capsys.readouterr().err
    assert f"erased {survivor}" in out and merged in out
    assert "data keys destroyed" in out and "raw messages erased (RD_INBOUND)" in out
    assert " 2\n" in out.split("raw messages erased (RD_INBOUND)")[1].split("\n")[0] + "\n"
    assert out.count("raw messages erased") == 1, out  # the counts once, not as steps and again
    texts, events, owner = asyncio.run(after(nats_url, uid, survivor))
    assert texts == [] and owner is None
    [erased] = [e for e in events if isinstance(e, CustomerErased)]
    assert (erased.reason, erased.actor, erased.merged_ids) == ("ticket 7", "cli", (merged,))
    identities = [getattr(e, "identity", None) for e in events if hasattr(e, "identity")]
    assert identities and all(i == ERASED for i in identities)

    # Again: nothing left to remove, nothing written twice.
    assert run_cli("erase", survivor, "--reason", "ticket 7", "--yes", "--nats-url", nats_url) == 0
    assert "erased before" in capsys.readouterr().err
    assert sum(isinstance(e, CustomerErased) for e in asyncio.run(after(nats_url, uid, survivor))[1]) == 1


async def seed_in_clear(url: str, uid: str) -> str:
    """A customer written as an older version (or with sealing off) wrote her: in clear."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        customer_id = f"cu_clear{uid[:12]}"
        now = datetime.now(UTC)
        store = EventStore(nc, js)  # no cipher: the fields go on the log as they are
        await store.append(Append(CustomerCreated(at=now, customer_id=customer_id, identity=f"email:{uid}@x.example")))
        await store.append(
            Append(
                MessageReceived(
                    at=now, customer_id=customer_id, conversation_id=f"cv_{uid[:12]}", channel="email",
                    message_id=f"msg_{uid[:12]}", provider_message_id=f"<{uid}@x>", text=f"my card {uid}",
                )
            )
        )  # fmt: skip
        return customer_id
    finally:
        await nc.close()


def test_erase_names_personal_data_left_in_clear_on_the_log(
    nats_url: str, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator audit: erasing a customer an older version wrote in clear printed success
    # while her words stayed readable in RD_EVENTS (destroying a key erases only sealed data).
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    customer_id = asyncio.run(seed_in_clear(nats_url, uid))
    assert run_cli("erase", customer_id, "--reason", "DSR-1", "--yes", "--nats-url", nats_url) == 3
    out = capsys.readouterr().err
    assert f"erased {customer_id}" in out
    assert "2 events on RD_EVENTS hold their personal data in clear" in out
