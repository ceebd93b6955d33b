"""services.spacing: periodic loop-stopping work takes at most its share of the time."""

from __future__ import annotations

import time

import pytest

from services.spacing import Spacing


def test_the_next_run_waits_the_run_s_length_over_the_duty(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"perf": 100.0, "mono": 50.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["perf"])
    monkeypatch.setattr(time, "monotonic", lambda: clock["mono"])
    spacing = Spacing(0.01)
    assert spacing.due()  # nothing ran yet
    with spacing.run():
        clock["perf"] += 0.030  # a 30 ms encode
    assert spacing.last_seconds == pytest.approx(0.030)
    clock["mono"] += 2.9
    assert not spacing.due()  # 30 ms at 1%: not before 3 s
    clock["mono"] += 0.2
    assert spacing.due()


def test_a_failed_run_is_spaced_too(monkeypatch: pytest.MonkeyPatch) -> None:
    spacing = Spacing(0.5)
    with pytest.raises(RuntimeError), spacing.run():
        time.sleep(0.01)
        raise RuntimeError("encode failed")
    assert spacing.last_seconds > 0
    assert not spacing.due()


@pytest.mark.parametrize("duty", [0, -0.1, 1.5])
def test_a_duty_outside_0_to_1_is_refused(duty: float) -> None:
    with pytest.raises(ValueError, match="duty"):
        Spacing(duty)
