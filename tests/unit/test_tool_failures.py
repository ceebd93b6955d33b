"""How a one-shot tool fails where a script or a tired operator reads it.

``--json`` (found by an ops audit): ``relaydesk dlq list --json | jq`` got empty input when NATS
was away, when the login or the request was refused, or when the key was not found; now stdout
holds one JSON object, ``{"error": {"code", "message"}}``, stderr the line, the exit code stays.

A NATS that never answers (a blackholed address, a port that accepts and says nothing): every
tool was silent for 26 s, whatever ``[nats] connect_timeout`` said; now within a second it says
where it connects, how long it waits and what sets it, and it gives up after three times
``connect_timeout``. The server here is a local socket that accepts and never speaks."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import cli

NOWHERE = "nats://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RELAYDESK_NATS_URL", raising=False)


@pytest.fixture
def silent_nats() -> Iterator[str]:
    """A TCP port that accepts every connection and never says a word (no NATS INFO)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)  # so the thread sees `closing` (a close does not wake accept())
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"nats://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        closing.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # Python prints it on stderr as it exits
            print(exit_.code, file=sys.stderr)
            return 1
        return exit_.code or 0


@pytest.mark.parametrize("argv", [["dlq", "list", "--json"], ["dlq", "show", "RD_INBOUND.42", "--json"]])
def test_a_json_tool_that_cannot_reach_nats_prints_an_error_object(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _main([*argv, "--nats-url", NOWHERE])
    said = capsys.readouterr()
    assert code == 1, said
    answer = json.loads(said.out)  # one object, nothing else on stdout
    assert answer["error"]["code"] == "nats_unreachable", answer
    assert f"cannot connect to NATS at {NOWHERE}: connection refused" in answer["error"]["message"]
    assert f"relaydesk dlq {argv[1]}: cannot connect to NATS at {NOWHERE}" in said.err, said.err


def test_without_json_a_failure_prints_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["dlq", "list", "--nats-url", NOWHERE]) == 1
    said = capsys.readouterr()
    assert said.out == "" and "cannot connect to NATS" in said.err


@pytest.mark.parametrize("action", ["list", "show"])
def test_the_json_actions_help_says_what_a_failure_prints(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["dlq", action, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert 'a failure still prints one JSON object on stdout, {"error": {"code": CODE, "message": TEXT}}' in text


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list"],
        ["status"],
        ["customers", "export", "cu_7f3a9c"],
        ["rebuild", "timelines"],
        ["setup"],  # a service's connection (connect_nats), as a tool
    ],
)
def test_a_tool_says_it_is_waiting_for_a_nats_that_never_answers(
    argv: list[str], silent_nats: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 s an attempt, so the whole wait is 3 s; the notice comes after 1 s.
    monkeypatch.setenv("RELAYDESK_NATS_CONNECT_TIMEOUT", "1")
    code = _main([*argv, "--nats-url", silent_nats])
    lines = capsys.readouterr().err.splitlines()
    assert code != 0, lines
    waiting = [i for i, line in enumerate(lines) if line.startswith(f"relaydesk: connecting to NATS at {silent_nats}")]
    assert len(waiting) == 1, lines
    notice = lines[waiting[0]]
    assert "no answer yet; waiting up to 3 s" in notice and "RELAYDESK_NATS_CONNECT_TIMEOUT" in notice, notice
    assert "RELAYDESK_NATS_URL or --nats-url" in notice, notice
    # Then the failure, saying why (said once, after the notice).
    after = " ".join(lines[waiting[0] + 1 :])
    assert "no answer (a firewall dropping packets, or not a NATS port?)" in after, lines
    if argv[0] != "setup":  # the tools' connection names its bound
        assert "at most 3 x [nats] connect_timeout = 3 s" in after, lines


def test_a_nats_that_refuses_is_said_as_refused_while_it_is_tried_again(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["dlq", "list", "--nats-url", NOWHERE]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"relaydesk: connecting to NATS at {NOWHERE}: connection refused so far"), lines
    assert "no answer yet" not in lines[0], lines
