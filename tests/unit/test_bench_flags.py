"""Every benchmark refuses a bad flag value when the command line is parsed, naming the flag,
before it spends minutes laying down a log (``--events -5`` used to run to a table of zeros)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from services.bench import progress
from services.bench.rebuild import pg_answers

BAD = [
    ("rebuild", ["--events", "-5"], "--events"),
    ("rebuild", ["--rounds", "0"], "--rounds"),
    ("restart", ["--events", "0"], "--events"),
    ("route", ["--messages", "0"], "--messages"),
    ("route", ["--seconds", "-1"], "--seconds"),
    ("route", ["--intakes", "1", "0"], "--intakes"),
    ("route", ["--log-level", "loud"], "--log-level"),
    ("ingest", ["--concurrency", "none"], "--concurrency"),
    ("ingest", ["--log-level", "verbose"], "--log-level"),
    ("e2e", ["--connectors", "1,x"], "--connectors"),
    ("e2e", ["--connectors", ","], "--connectors"),
    ("decide", ["--agents", "0"], "--agents"),
    ("crypto", ["--chunk", "0"], "--chunk"),
]


@pytest.mark.parametrize(("bench", "argv", "flag"), BAD, ids=[f"{b}{' '.join(a)}" for b, a, _ in BAD])
def test_a_bad_value_is_refused_naming_its_flag(
    bench: str, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"services.bench.{bench}")
    with pytest.raises(SystemExit) as stopped:
        module.main(argv)
    assert stopped.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["rebuild", "restart", "route", "ingest", "e2e", "decide", "crypto", "language"])
def test_json_into_a_missing_folder_is_refused_at_once(
    bench: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"services.bench.{bench}")
    with pytest.raises(SystemExit) as stopped:
        module.main(["--json", str(tmp_path / "missing" / "figures.json")])
    assert stopped.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_thousands_separators_are_read() -> None:
    from services.bench.args import positive

    assert positive("1_000_000") == positive("1,000,000") == 1_000_000


def test_an_empty_postgres_dsn_skips_postgres_with_the_reason() -> None:
    assert pg_answers("") == "--pg-dsn is empty"


def test_progress_off_a_terminal_is_a_line_at_each_milestone_only(capsys: pytest.CaptureFixture[str]) -> None:
    for written in range(5_000, 305_000, 5_000):
        progress.show(f"writing the log: {written:,}", milestone=written % 100_000 < 5_000)
    progress.done()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [f"writing the log: {n:,}" for n in (100_000, 200_000, 300_000)]
