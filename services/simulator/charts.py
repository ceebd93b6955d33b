"""PNG charts per scenario: service level and queue length per hour, one line per policy.

matplotlib is optional: without it the command prints how to get it and writes no chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, layout="constrained")
    for name, summary in result["policies"].items():
        hourly = summary["hourly"]
        hours = list(range(len(hourly["service_level"])))
        levels = [None if v is None else v * 100 for v in hourly["service_level"]]
        top.plot(hours, [float("nan") if v is None else v for v in levels], marker="o", markersize=3, label=name)
        queue = [float("nan") if v is None else v for v in hourly["queue_length"]]
        bottom.plot(hours, queue, marker="o", markersize=3, label=name)
    top.set_ylabel("service level (arrivals of the hour)")
    top.set_ylim(0, 105)
    top.yaxis.set_major_formatter(PercentFormatter())
    top.legend(ncols=4, fontsize=9, frameon=False)
    bottom.set_ylabel("waiting conversations (mean)")
    bottom.set_xlabel("hour since the start")
    top.set_title(
        f"{result['scenario']}: {result['arrivals']} arrivals, {result['agents']} agents, seed {result['seed']}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
