"""``relaydesk up``'s port flags are checked when parsed (found by an audit: ``--api-port
70000`` started NATS and every service, then failed in bind(); ``--nats-port 0`` was dropped
as false). ``--nats-port 0`` means any free port, as ``[nats] port = 0`` does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services import cli
from tests.interrupting import RELAYDESK


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--api-port", "70000", "argument --api-port: must be a port number, 1 to 65535 (got '70000')"),
        ("--api-port", "0", "argument --api-port: must be a port number, 1 to 65535 (got '0')"),
        ("--nats-port", "65536", "argument --nats-port: must be a port number, 0 to 65535 (got '65536')"),
        ("--nats-port", "-1", "argument --nats-port: must be a port number, 0 to 65535 (got '-1')"),
        ("--sms-port", "http", "argument --sms-port: must be a port number, 1 to 65535 (got 'http')"),
    ],
)
def test_a_port_out_of_range_is_refused_before_anything_starts(
    tmp_path: Path, flag: str, value: str, said: str
) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    done = subprocess.run(
        [RELAYDESK, "up", "--data-dir", str(data), flag, value],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == f"relaydesk up: error: {said}"
    assert not data.exists()  # nothing started, not even the data dir


def test_port_flags_reach_the_config_zero_included(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("RELAYDESK_")]:
        monkeypatch.delenv(name)
    args = cli.build_parser().parse_args(["up", "--nats-port", "0", "--api-port", "9000", "--sms-port", "9001"])
    config = cli._config(args)
    assert config.nats.port == 0  # any free port (services.bus.embedded.pick_port)
    assert config.api.port == 9000
    assert config.connectors["sms"]["port"] == 9001
    defaults = cli._config(cli.build_parser().parse_args(["up"]))
    assert (defaults.nats.port, defaults.api.port, "sms" in defaults.connectors) == (4222, 8080, False)


def test_help_says_what_0_means() -> None:
    up = next(
        action.choices["up"]
        for action in cli.build_parser()._actions
        if isinstance(action.choices, dict) and "up" in action.choices
    )
    text = " ".join(up.format_help().split())
    assert "embedded NATS port, 0 to 65535 (default 4222; a free one if it is taken; 0: any free port)" in text
    assert "API port, 1 to 65535 (default 8080)" in text
