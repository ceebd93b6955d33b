"""A log level or format that names none is refused at start (found by an audit: ``--log-level
bogus`` and ``RELAYDESK_LOG_LEVEL=warnig`` ran at info, ``RELAYDESK_LOG_FORMAT=xml`` switched a
container's JSON lines to console text)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from services import logs
from tests.interrupting import RELAYDESK


def relaydesk(*args: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    # A NATS nobody serves: were the setting let through, the router would say it cannot connect.
    env |= {"RELAYDESK_NATS_URL": "nats://127.0.0.1:1", "RELAYDESK_HEALTH_PORT": "0"}
    env |= {"RELAYDESK_DATA_DIR": str(tmp_path / "data"), **env_vars}
    return subprocess.run([RELAYDESK, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_the_flags_take_only_known_names(tmp_path: Path) -> None:
    done = relaydesk("router", "--log-level", "bogus", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "relaydesk router: error: argument --log-level: invalid choice: 'bogus' "
        "(choose from 'debug', 'info', 'warning', 'error', 'critical')"
    )
    done = relaydesk("router", "--log-format", "xml", tmp_path=tmp_path)
    assert done.returncode == 2
    assert "argument --log-format: invalid choice: 'xml' (choose from 'json', 'console')" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said", "flags"),
    [
        # (Off a terminal a service logs JSON and says its last line so: asked for console here.)
        (
            "RELAYDESK_LOG_LEVEL",
            "warnig",
            "RELAYDESK_LOG_LEVEL must be debug, info, warning, error or critical",
            ["--log-format", "console"],
        ),
        ("RELAYDESK_LOG_FORMAT", "xml", "RELAYDESK_LOG_FORMAT must be json or console", []),
    ],
)
@pytest.mark.parametrize("command", ["router", "status"])
def test_a_mistyped_variable_stops_the_start_in_one_line(
    tmp_path: Path, variable: str, value: str, said: str, flags: list[str], command: str
) -> None:
    done = relaydesk(command, *flags, tmp_path=tmp_path, **{variable: value})
    assert (done.returncode, done.stderr) == (1, f"relaydesk: {said} (got {value!r})\n")


def test_a_service_logging_json_says_it_in_its_json_exit_line(tmp_path: Path) -> None:
    done = relaydesk("router", tmp_path=tmp_path, RELAYDESK_LOG_LEVEL="bogus", RELAYDESK_LOG_FORMAT="json")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    said = json.loads(line)
    assert said["event"] == "relaydesk.exit"
    assert said["reason"] == "RELAYDESK_LOG_LEVEL must be debug, info, warning, error or critical (got 'bogus')"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("level", "expected"),
    [("DEBUG", logging.DEBUG), ("Warning", logging.WARNING), ("warn", logging.WARNING), ("critical", logging.CRITICAL)],
)
def test_known_levels_in_any_case(
    level: str, expected: int, restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYDESK_LOG_LEVEL", level)
    logs.configure(None, "json")
    assert logging.getLogger().level == max(expected, logging.WARNING)
    assert structlog.get_config()["wrapper_class"] is structlog.make_filtering_bound_logger(expected)


def test_an_unset_or_empty_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYDESK_LOG_LEVEL", "")
    monkeypatch.delenv("RELAYDESK_LOG_FORMAT", raising=False)
    assert logs.log_level() == "info"
    assert logs.log_format() in ("json", "console")
    monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "JSON")
    assert logs.log_format() == "json" and logs.is_json()
    monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "xml")
    assert not logs.is_json()  # what a failing start says its last line in
    with pytest.raises(logs.LogSettingError, match=r"^RELAYDESK_LOG_FORMAT must be json or console \(got 'xml'\)$"):
        logs.log_format()
    with pytest.raises(logs.LogSettingError, match=r"^log level must be .* \(got 'loud'\)$"):
        logs.configure("loud")
