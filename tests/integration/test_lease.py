"""The router lease over a real nats-server: one holder at a time, takeover after lapse."""

from __future__ import annotations

import pytest

from events import subjects
from services.lease import Lease

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_one_holder_then_takeover_after_lapse(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    clock = FakeClock()
    first = Lease(kv, f"test-{uid}", "a", ttl=5, clock=clock)
    second = Lease(kv, f"test-{uid}", "b", ttl=5, clock=clock)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    clock.now += 3
    assert await first.renew()
    assert not await second.try_acquire()  # the standby sees the renewal: its count starts over
    clock.now += 4  # 4 s after it saw the renewal: still held
    assert not await second.try_acquire()
    assert not first.held, "the holder stops counting on it before a standby may take it"
    clock.now += 2  # lapsed
    assert await second.try_acquire()
    assert not await first.renew()  # the old holder learns it lost the lease


# Two machines' clocks are never compared: each lease has its own (steady clocks of two
# machines have unrelated origins; wall clocks drift, step under NTP, jump on a VM resume).


async def test_a_standby_whose_clock_is_ahead_does_not_take_a_renewed_lease(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    holders, standbys = FakeClock(), FakeClock()
    standbys.now += 3_600  # an hour ahead (or stepped forward by NTP)
    first = Lease(kv, f"test-{uid}", "a", ttl=5, clock=holders, wall=holders)
    second = Lease(kv, f"test-{uid}", "b", ttl=5, clock=standbys, wall=standbys)
    assert await first.try_acquire()
    for _ in range(6):
        assert not await second.try_acquire(), "two leaders: the standby took a lease renewed on time"
        holders.now += 2
        standbys.now += 2
        assert await first.renew()
    assert not await second.try_acquire()  # it sees the last renewal
    standbys.now += 5  # the holder stopped renewing: taken over ttl later on the standby's own clock
    assert await second.try_acquire()


async def test_a_holder_whose_clock_jumped_ahead_and_died_is_replaced_within_ttl(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    holders, standbys = FakeClock(), FakeClock()
    holders.now += 86_400  # a day ahead when it wrote its last renewal, then killed
    first = Lease(kv, f"test-{uid}", "a", ttl=5, clock=holders, wall=holders)
    second = Lease(kv, f"test-{uid}", "b", ttl=5, clock=standbys, wall=standbys)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    standbys.now += 5
    assert await second.try_acquire(), "no leader for as long as the dead holder's clock was ahead"


async def test_a_holder_stalled_past_its_lease_does_not_count_on_it(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    clock = FakeClock()
    first = Lease(kv, f"test-{uid}", "a", ttl=5, clock=clock)
    assert await first.try_acquire()
    assert first.held
    clock.now += 6  # a pause or a suspended VM: a standby may have taken it meanwhile
    assert not first.held
    assert await first.renew()  # nobody did: renewed, and counted on again
    assert first.held


async def test_release_hands_over_at_once(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    first = Lease(kv, f"test-{uid}", "a", ttl=60)
    second = Lease(kv, f"test-{uid}", "b", ttl=60)
    assert await first.try_acquire()
    await first.release()
    assert await second.try_acquire()
