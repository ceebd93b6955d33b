"""The projector's readiness is time-aware (services.health.checks.Stall, ``[projection]
stale_seconds``): a lag in events alone said nothing of time, so a projector stalled at low
traffic showed a small, steady lag and stayed ready (the observability audit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import ConfigError, load
from services.health.checks import PROJECTOR_STALE_S, Stall


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_behind_without_moving_counts_from_the_first_sight() -> None:
    clock = Clock()
    stall = Stall(clock)
    assert stall.behind_for(position=40, lag=0) == 0  # caught up
    clock.now += 500
    assert stall.behind_for(position=40, lag=2) == 0  # two events wait: seen now
    clock.now += 90
    assert stall.behind_for(position=40, lag=2) == 90
    clock.now += 40
    assert stall.behind_for(position=40, lag=3) == 130  # a third one came: still not moving


def test_moving_or_catching_up_starts_the_count_again() -> None:
    clock = Clock()
    stall = Stall(clock)
    stall.behind_for(position=10, lag=5_000)
    clock.now += 300
    assert stall.behind_for(position=2_000, lag=3_000) == 0  # a long catch-up that moves is no stall
    clock.now += 30
    assert stall.behind_for(position=2_000, lag=3_000) == 30
    assert stall.behind_for(position=5_000, lag=0) == 0
    clock.now += 30
    assert stall.behind_for(position=5_000, lag=1) == 0  # behind again: from now
    clock.now += 5
    stall.reset()  # (a rebuild: the position moves at its swap)
    assert stall.behind_for(position=5_000, lag=1) == 0


def test_stale_seconds_is_a_projection_setting(tmp_path: Path) -> None:
    assert load(env={}).projection.stale_seconds == PROJECTOR_STALE_S == 120
    path = tmp_path / "relaydesk.toml"
    path.write_text("[projection]\nstale_seconds = 30\n")
    assert load(path, env={}).projection.stale_seconds == 30
    assert load(env={"RELAYDESK_PROJECTION_STALE_SECONDS": "45"}).projection.stale_seconds == 45
    with pytest.raises(ConfigError, match="stale_seconds"):
        load(env={"RELAYDESK_PROJECTION_STALE_SECONDS": "0"})
    path.write_text("[projection]\nstale_second = 30\n")
    with pytest.raises(ConfigError, match="stale_second"):
        load(path, env={})
