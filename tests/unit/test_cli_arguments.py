"""A tool's bad argument is refused when the command line is parsed: exit 2, a line naming the
argument, what was wrong and what to do, before NATS or the API is asked anything (found by an
ops audit: ``customers export ../x`` went to NATS and answered ``refused (400): not a customer
id``, ``rebuild --customer`` said ``not a valid subject token``, ``dlq retry nokey`` said
``nothing parked under nokey``, ``customers import`` of a missing file waited for an unreachable
NATS first, and ``export --out`` into a missing folder read the whole customer, then failed).

The NATS URL given is one nothing listens on: a command that got as far as connecting exits 1
with a NATS message, which every case here refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import cli

NOWHERE = "nats://127.0.0.1:1"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--nats-url", NOWHERE] if argv[0] != "report" else [*argv, "--api", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert "NATS" not in err.splitlines()[-1] and "cannot reach" not in err, err
    return int(exit_.value.code or 0), err.splitlines()[-1]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RELAYDESK_NATS_URL", raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["customers", "export", "../etc"],
        ["customers", "erase", "cu 1", "--reason", "DSR-1", "--yes"],
        ["customers", "link", "cu/1", "email:ann@example.com"],
        ["customers", "unlink", "", "sms:+15551234567"],
        ["customers", "merge", "cu_1", "cu.2"],
        ["rebuild", "timelines", "--customer", "rd.evt.>"],
    ],
)
def test_a_customer_id_of_the_wrong_shape_is_refused_naming_the_shape(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _run(argv, capsys)
    assert code == 2
    assert "not a customer id" in line and "letters, digits, '_' and '-'" in line and "e.g. cu_" in line, line


@pytest.mark.parametrize(
    ("customer", "hint"),
    [("ann@example.com", "looks like an address"), ("cu_7f3a9c ", "spaces around it")],
)
def test_a_pasted_address_or_padded_id_gets_a_hint(
    customer: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _run(["customers", "export", customer], capsys)
    assert code == 2 and hint in line, line


@pytest.mark.parametrize("action", ["show", "retry", "drop"])
def test_a_dlq_key_of_the_wrong_shape_is_refused_naming_the_shape(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _run(["dlq", action, "nokey"], capsys)
    assert code == 2 and "not a parked message's key" in line and "RD_INBOUND.42" in line, line


def test_an_import_file_that_is_missing_or_a_folder_is_named_before_nats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "customers.csv"
    code, line = _run(["customers", "import", str(missing)], capsys)
    assert code == 2 and f"no such file: {missing}" in line, line
    code, line = _run(["customers", "import", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path} is a directory" in line, line


@pytest.mark.parametrize(
    "argv",
    [
        ["customers", "export", "cu_7f3a9c", "--out", "{missing}/ann.json"],
        ["report", "--token", "t", "--png", "{missing}/report.png"],
    ],
)
def test_an_output_file_that_cannot_be_written_is_refused_before_the_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder"
    code, line = _run([a.replace("{missing}", str(missing)) for a in argv], capsys)
    assert code == 2 and f"no directory {missing} (create it first)" in line, line
    code, line = _run([a.replace(f"{{missing}}/{Path(argv[-1]).name}", str(tmp_path)) for a in argv], capsys)
    assert code == 2 and f"{tmp_path} is a directory: name a file in it" in line, line


def test_a_good_customer_id_and_file_get_as_far_as_nats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The checks refuse only what is wrong: these reach the (unreachable) NATS, exit 1."""
    path = tmp_path / "customers.csv"
    path.write_text("identity,tier\nemail:ann@example.com,gold\n")
    for argv in (
        ["customers", "export", "cu_7f3a9c-x", "--out", str(tmp_path / "a.json")],
        ["customers", "import", str(path)],
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*argv, "--nats-url", NOWHERE])
        said = f"{exit_.value.code} {capsys.readouterr().err}"
        assert exit_.value.code != 2 and "cannot connect to NATS at nats://127.0.0.1:1" in said, said


@pytest.mark.parametrize("argv", [["customers", "export", "cu_7f3a9c"], ["dlq", "list"], ["rebuild", "timelines"]])
def test_nats_refusing_is_said_as_such_naming_the_url_and_what_to_do(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an ops audit: every tool said ``nats: no servers available for connection``,
    neither why (refused? no answer?) nor how long it had tried nor what to do."""
    try:
        code: int | str | None = cli.main([*argv, "--nats-url", NOWHERE])
    except SystemExit as exit_:
        code = exit_.code
    said = " ".join(f"{code if isinstance(code, str) else ''} {capsys.readouterr().err}".split())
    assert f"cannot connect to NATS at {NOWHERE}: connection refused (tried " in said, said
    assert "is NATS running there? Set RELAYDESK_NATS_URL or --nats-url" in said, said
