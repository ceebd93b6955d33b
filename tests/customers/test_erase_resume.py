"""An erasure that dies after destroying the keys, before its second read of ``RD_INBOUND``
(the erasure's retry gap): the family's addresses no longer read on the log, so neither a retry
nor anyone else erased a raw message that had come from one of them while it ran (intake had
not recorded it anywhere yet). The erasure now records itself, the addresses sealed with a key
of its own (``services.customers.erase_job``); a retry and the API's resume read them back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events.kv import stream_subjects
from events.personal import CustomerKeys
from events.personal.keys import KEYS_ALL, KEYS_STREAM
from events.subjects import IDENTITY_BUCKET
from services.api.erasure_jobs import resume_erasures
from services.bootstrap import event_store
from services.customers import erase
from services.customers.erase import Eraser
from services.customers.erase_job import JOB_PREFIX, ErasureJobs
from services.customers.erase_report import ErasureTargets
from services.customers.scan import scan
from services.identity import IDENTITY_KEY_NAME
from tests.customers.helpers import customer, customers_of
from tests.customers.test_erase_races import crash_at_the_second_read, inbound_naming, publish_raw

pytestmark = pytest.mark.integration


async def crash_after_the_keys(nc: NATS, monkeypatch: pytest.MonkeyPatch, ann: str, ann_address: str, uid: str) -> None:
    """Erase Ann; while it runs a message comes from her address (not recorded anywhere yet),
    and the process dies after the keys went, at the second read of ``RD_INBOUND``."""
    customers = await customers_of(nc, event_store(nc))
    await publish_raw(nc, ann_address, f"before-{uid}")  # RD_INBOUND is not empty: there is a second read
    gate, real = crash_at_the_second_read(monkeypatch)
    erasing = asyncio.create_task(Eraser(customers, CustomerKeys(nc.jetstream())).erase(ann, "DSR-8", "operator"))
    await gate.wait()  # RD_INBOUND read once, the keys about to go
    await publish_raw(nc, ann_address, f"arrived-{uid}")
    gate.open()
    with pytest.raises(ConnectionError):
        await erasing
    assert (await customers.facts(ann)).erased
    assert await inbound_naming(nc, f"arrived-{uid}") == 1
    monkeypatch.setattr(erase, "erase_inbound", real)


async def job_keys(nc: NATS) -> list[str]:
    """The subjects of the system keys erasure jobs made that are still in RD_KEYS."""
    return [s for s in await stream_subjects(nc.jetstream(), KEYS_STREAM, KEYS_ALL) if ".erasure_" in s]


async def job_records(nc: NATS) -> Any:
    """The values of the erasure records in ``rd_identity``."""
    async for msg in scan(nc.jetstream(), f"KV_{IDENTITY_BUCKET}", f"$KV.{IDENTITY_BUCKET}.{JOB_PREFIX}>"):
        yield msg.data


async def test_a_retry_erases_what_came_from_the_addresses_before_a_crash_after_the_keys(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann_address = f"ann-resume-{uid}@example.com"
    customers = await customers_of(nc, event_store(nc))
    ann = await customer(customers, f"email:{ann_address}")
    await crash_after_the_keys(nc, monkeypatch, ann, ann_address, uid)

    # The record holds the address sealed, never in clear.
    assert not [value async for value in job_records(nc) if ann_address.encode() in value]

    again = await Eraser(await customers_of(nc, event_store(nc)), CustomerKeys(nc.jetstream())).erase(
        ann, "DSR-8", "operator"
    )
    assert again.already_erased
    assert await inbound_naming(nc, ann_address, f"arrived-{uid}") == 0
    assert again.inbound_messages == 1
    # Finished: the record and the key its addresses were sealed with are gone.
    assert await ErasureJobs(customers.directory, CustomerKeys(nc.jetstream())).read(ann) is None
    assert await job_keys(nc) == []


async def test_the_api_resumes_an_erasure_a_crash_left(nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ann_address = f"ann-resumed-{uid}@example.com"
    customers = await customers_of(nc, event_store(nc))
    ann = await customer(customers, f"email:{ann_address}")
    await crash_after_the_keys(nc, monkeypatch, ann, ann_address, uid)

    # What the API runs at its start (services.api.erasure_jobs): nobody asked again.
    keys = CustomerKeys(nc.jetstream())
    finished = await resume_erasures(await customers_of(nc, event_store(nc)), keys, ErasureTargets())
    assert finished >= 1
    assert await inbound_naming(nc, ann_address, f"arrived-{uid}") == 0
    assert await ErasureJobs(customers.directory, keys).read(ann) is None
    assert await job_keys(nc) == []
    # The identity HMAC key, a system key too, is left alone.
    assert await keys.find_system_key(IDENTITY_KEY_NAME) is not None


async def test_two_erasures_at_once_leave_no_job_key(nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both read no record before either wrote one: each made a key, the record names the one
    written last. Once both finished, neither key is left in RD_KEYS (the other sealed
    addresses whose bytes a purged KV entry may keep until NATS drops its block)."""
    customers = await customers_of(nc, event_store(nc))
    ann = await customer(customers, f"email:ann-twice-{uid}@example.com")
    both_read = asyncio.Event()
    readers: list[int] = []
    real = ErasureJobs.read

    async def read_together(self: ErasureJobs, survivor: str) -> Any:
        found = await real(self, survivor)
        if len(readers) < 2:  # the two begins: each waits until the other has read too
            readers.append(1)
            if len(readers) == 2:
                both_read.set()
            await asyncio.wait_for(both_read.wait(), 20)
        return found

    monkeypatch.setattr(ErasureJobs, "read", read_together)
    erasers = [Eraser(await customers_of(nc, event_store(nc)), CustomerKeys(nc.jetstream())) for _ in range(2)]
    first, second = await asyncio.gather(*(e.erase(ann, "DSR-9", "op") for e in erasers))
    assert first.erased_ids == second.erased_ids == [ann]
    assert await job_keys(nc) == []
    assert await ErasureJobs(customers.directory, CustomerKeys(nc.jetstream())).read(ann) is None
