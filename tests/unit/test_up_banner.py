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
