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
    clock.now += 4  # 4 s after the renewal: still held
    assert not await second.try_acquire()
    clock.now += 2  # lapsed
    assert await second.try_acquire()
    assert not await first.renew()  # the old holder learns it lost the lease


async def test_release_hands_over_at_once(nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    first = Lease(kv, f"test-{uid}", "a", ttl=60)
    second = Lease(kv, f"test-{uid}", "b", ttl=60)
    assert await first.try_acquire()
    await first.release()
    assert await second.try_acquire()
