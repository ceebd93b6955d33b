"""A config file that is a directory or cannot be read is one line, like a missing one, with
the exit code of every config error (found by an audit: IsADirectoryError / PermissionError
tracebacks from every command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import check

RELAYDESK = str(Path(sys.executable).with_name("relaydesk"))


def relaydesk(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env |= {"RELAYDESK_DATA_DIR": str(tmp_path / "data"), "RELAYDESK_HEALTH_PORT": "0"}
    return subprocess.run([RELAYDESK, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [["status"], ["config", "show"], ["router", "--log-format", "console"]])
def test_a_directory_as_config_is_one_line_and_exit_1(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "somedir").mkdir()
    done = relaydesk(*command, "--config", "somedir", tmp_path=tmp_path)
    assert (done.returncode, done.stderr) == (1, "relaydesk: cannot read somedir: Is a directory\n")
    missing = relaydesk(*command, "--config", "missing.toml", tmp_path=tmp_path)
    assert (missing.returncode, missing.stderr) == (1, "relaydesk: config file not found: missing.toml\n")


def test_config_check_of_a_directory_lists_it_as_a_problem(tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    done = relaydesk("config", "check", "somedir", tmp_path=tmp_path)
    assert (done.returncode, done.stderr) == (1, "cannot read somedir: Is a directory\n1 problem in somedir\n")


def test_a_service_says_it_in_its_json_exit_line(tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    done = relaydesk("router", "--config", "somedir", "--log-format", "json", tmp_path=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    said = json.loads(line)
    assert (said["event"], said["reason"], said["command"]) == (
        "relaydesk.exit",
        "cannot read somedir: Is a directory",
        "router",
    )


def test_a_file_that_cannot_be_read_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (The tests may run as root, who reads a file of mode 000: the refusal is made here.)
    config = tmp_path / "relaydesk.toml"
    config.write_text("[api]\nport = 9000\n")

    def refused(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refused)
    assert check(config, env={}) == (None, [f"cannot read {config}: Permission denied"])
