"""Side-by-side test workers pick ports from slices of their own (``FREE_PORT_SLICE``): two
of them cannot pick the same port between one's pick and its bind (a CI failure: a voice
connector's port, picked by both workers, bound by the other's)."""

from __future__ import annotations

import pytest

from services.bus import embedded as embedded_nats
from services.bus.embedded import PORT_SLICE_ENV, free_port


def test_each_worker_draws_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    low = embedded_nats._ephemeral_low()
    if low <= 11_000:
        pytest.skip(f"the kernel's ephemeral range starts at {low}: ports come from the kernel here")
    middle = 10_000 + (low - 10_000) // 2
    monkeypatch.setenv(PORT_SLICE_ENV, "0/2")
    first = {free_port() for _ in range(50)}
    monkeypatch.setenv(PORT_SLICE_ENV, "1/2")
    second = {free_port() for _ in range(50)}
    assert all(10_000 <= p < middle for p in first)
    assert all(middle <= p < low for p in second)


@pytest.mark.parametrize("value", ["", "2/2", "x/2", "1/0", "1"])
def test_no_slice_or_a_bad_one_draws_from_the_whole_range(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PORT_SLICE_ENV, value)
    assert embedded_nats._slice(10_000, 30_000) == (10_000, 30_000)
