"""/readyz's staleness rule (services.api.readiness.Freshness): a caught-up view that stops
following the log is reported once it has left an end of the log unreached for the window; a
burst it folds within the window, however large, is not."""

from __future__ import annotations

from services.api.readiness import Freshness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_folded_within_the_window_is_no_staleness() -> None:
    clock = Clock()
    fresh = Freshness(after=10, clock=clock)
    assert fresh.stale(position=100, log_end=5_000) == 0  # 4,900 behind: a burst, just seen
    clock.now += 6
    assert fresh.stale(position=5_000, log_end=9_000) == 0  # the first end reached; a new one seen
    clock.now += 6
    assert fresh.stale(position=9_000, log_end=9_000) == 0  # and that one too


def test_a_view_that_stops_is_stale_after_the_window_and_fresh_once_it_catches_up() -> None:
    clock = Clock()
    fresh = Freshness(after=10, clock=clock)
    assert fresh.stale(position=50, log_end=50) == 0
    assert fresh.stale(position=50, log_end=60) == 0  # behind, seen now
    clock.now += 9
    assert fresh.stale(position=50, log_end=80) == 0
    clock.now += 1
    assert fresh.stale(position=50, log_end=90) == 10  # the end seen 10 s ago is not reached
    clock.now += 5
    assert fresh.behind_for(position=60, log_end=90) == 6  # 60 reached: the next sight (80) is 6 s old
    assert fresh.stale(position=60, log_end=90) == 0
    assert fresh.stale(position=90, log_end=90) == 0


def test_a_view_stuck_for_long_keeps_its_oldest_sight() -> None:
    clock = Clock()
    fresh = Freshness(after=10, clock=clock)
    for end in range(1, 1_000):
        fresh.stale(position=0, log_end=end)
        clock.now += 1
    assert fresh.stale(position=0, log_end=1_000) == 999  # bounded memory, the age still true
