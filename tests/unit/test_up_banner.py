"""``relaydesk up`` prints the operator token only when it generated it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import load
from services.up import Started, print_banner

TOKEN = "rdop_" + "x" * 40


@pytest.mark.parametrize("configured", [False, True])
def test_a_kept_or_configured_token_is_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], configured: bool
) -> None:
    # A deep data dir (a worker's tmp path): its token file is named whole, not folded mid-name.
    data_dir = tmp_path / ("deep-" * 12) / "relaydesk-data"
    env = {"RELAYDESK_DATA_DIR": str(data_dir), **({"RELAYDESK_API_TOKEN": TOKEN} if configured else {})}
    print_banner(load(env=env), Started("nats://127.0.0.1:4222", TOKEN), embedded=True, new_token=False)
    out = capsys.readouterr()
    assert TOKEN not in out.err + out.out
    assert ("RELAYDESK_API_TOKEN" if configured else str(data_dir / "api-token")) in out.err


def test_a_generated_token_is_printed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    print_banner(load(env={"RELAYDESK_DATA_DIR": str(tmp_path)}), Started("nats://x", TOKEN), True, new_token=True)
    assert TOKEN in capsys.readouterr().err


def test_no_address_or_path_is_cut_short_off_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by a documentation audit: under `make run > log` (80 columns off a terminal) the
    # banner ended the NATS passwords' folder in "…"; a cell too long for its line now folds.
    data_dir = tmp_path / ("deep-" * 12) / "relaydesk-data"
    print_banner(
        load(env={"RELAYDESK_DATA_DIR": str(data_dir)}),
        Started("nats://127.0.0.1:4222", TOKEN, health_url="http://127.0.0.1:9090"),
        embedded=True,
        new_token=False,
    )
    err = capsys.readouterr().err
    assert "…" not in err
    where = "".join(line.split("│")[2].strip() for line in err.splitlines() if line.count("│") == 3)
    for shown in (str(data_dir.resolve()), str(data_dir.resolve() / "nats-credentials"), "http://127.0.0.1:9090"):
        assert shown in where, shown
