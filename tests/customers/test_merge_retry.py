"""Asking for a merge again (a retry, a script run twice) and merges of merges, over a real
nats-server: the same merge again says it was done and finishes what a crash cut short; a
refusal names the customer that stands for the family now. Found by a merges audit."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import CustomersMerged
from events.store import EventStore
from events.streams import ensure_streams
from services import logs
from services.cli import main
from services.customers.service import CustomerError
from services.identity import IdentityDirectory
from tests.customers.helpers import customer, customers_of

pytestmark = pytest.mark.integration


async def merges_on(store: EventStore, customer_id: str) -> list[str]:
    return [
        s.event.merged_id
        for s in await store.read(subjects.customer_scope(customer_id))
        if isinstance(s.event, CustomersMerged)
    ]


async def test_a_merge_cut_short_after_its_event_is_finished_by_asking_again(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"email:ann-{uid}@example.com")
    other_address = f"email:ann-other-{uid}@example.com"
    other = await customer(customers, other_address)

    real_link = IdentityDirectory.link

    async def crash(self: IdentityDirectory, identity: str, customer_id: str) -> None:
        raise ConnectionError("the CLI's connection dropped")

    monkeypatch.setattr(IdentityDirectory, "link", crash)
    with pytest.raises(ConnectionError):
        await customers.merge(ann, other, "cli")  # the event is written, the addresses not moved
    monkeypatch.setattr(IdentityDirectory, "link", real_link)
    assert await customers.directory.lookup(other_address) == other

    again: dict[str, Any] = await customers.merge(ann, other, "cli")  # "run the same command again"
    assert again["already_merged"] is True
    assert again["identities_moved"] == [other_address]
    assert await customers.directory.lookup(other_address) == ann  # new messages land on Ann
    assert await merges_on(store, ann) == [other]  # nothing written twice


async def test_the_same_merge_again_says_it_was_done_and_writes_nothing(nc: NATS, store: EventStore, uid: str) -> None:
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"sms-{uid}:ann")
    other = await customer(customers, f"sms-{uid}:other")
    first = await customers.merge(ann, other, "operator")
    assert first["already_merged"] is False
    again = await customers.merge(ann, other, "operator")
    assert (again["already_merged"], again["seq"], again["customer_id"]) == (True, first["seq"], ann)
    assert await merges_on(store, ann) == [other]


async def test_merges_of_merges_name_the_customer_that_stands_for_the_family_now(
    nc: NATS, store: EventStore, uid: str
) -> None:
    customers = await customers_of(nc, store)
    a, b, c, d = [await customer(customers, f"chat:{name}-{uid}") for name in "abcd"]
    await customers.merge(b, a, "operator")
    await customers.merge(c, b, "operator")

    # Into a merged-away customer: the refusal names where to merge instead, C, not B (itself merged).
    with pytest.raises(CustomerError) as refused:
        await customers.merge(a, d, "operator")
    assert refused.value.status == 409
    assert f"merge into {c} instead" in refused.value.reason, refused.value.reason
    assert refused.value.extra == {"merged_into": b, "survivor": c}
    with pytest.raises(CustomerError) as refused:
        await customers.merge(d, a, "operator")
    assert refused.value.status == 409 and c in refused.value.reason
    assert refused.value.extra["survivor"] == c

    # A into B asked again after B went into C: done already, A's address finds C.
    again = await customers.merge(b, a, "operator")
    assert again["already_merged"] is True
    assert await customers.directory.lookup(f"chat:a-{uid}") == c
    assert await merges_on(store, b) == [a]

    with pytest.raises(CustomerError) as refused:
        await customers.merge(c, c, "operator")
    assert refused.value.status == 400


def test_the_cli_run_twice_says_the_second_time_that_it_was_done(
    nats_url: str, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relaydesk customers merge`` run again (its run was cut short, or a script retries):
    exit 0, "already merged", where it answered "refused (409)" and exit 1."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)

    async def two() -> tuple[str, str]:
        nc = await nats.connect(nats_url)
        try:
            await ensure_streams(nc.jetstream())
            customers = await customers_of(nc, EventStore(nc, nc.jetstream()))
            return await customer(customers, f"chat:cli-a-{uid}"), await customer(customers, f"chat:cli-b-{uid}")
        finally:
            await nc.drain()

    survivor, other = asyncio.run(two())
    merge = ["customers", "merge", survivor, other, "--nats-url", nats_url, "--log-level", "warning"]
    assert main(merge) == 0
    assert f"merged {other} into {survivor} (1 address moved)" in capsys.readouterr().out
    assert main(merge) == 0
    out = capsys.readouterr()
    assert f"{other} was already merged into {survivor}: nothing new written" in out.out, out
    assert "refused" not in out.err
