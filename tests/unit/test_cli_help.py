"""Every ``relaydesk`` help says what the command does and fits the terminal (found by a
documentation audit: ``report`` offered NATS options it never uses, it talks to the API over
HTTP; ``status --help`` printed its NATS options' text as one 200-character line; ``bench``,
``rebuild`` and ``docs`` listed bare choices; the top help left out ``--group-by conversation``)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from services import cli_parser as cli


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-command, by its words (``"customers link"``)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found[f"{words} {name}".strip()] = child
                    walk(child, f"{words} {name}")

    found["relaydesk"] = parser = cli.build_parser()
    walk(parser, "")
    return found


def _help(parser: argparse.ArgumentParser) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        parser.print_help()
    return out.getvalue()


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_help_fits_the_terminal(command: str) -> None:
    # Text laid out by hand (the top help, customers, dlq) runs to ~110 columns; what argparse
    # leaves unwrapped (a raw formatter over a paragraph) runs to hundreds.
    too_long = [line for line in _help(_commands()[command]).splitlines() if len(line) > 120]
    assert not too_long, too_long


def test_report_offers_no_nats_options_it_would_not_use() -> None:
    text = _help(_commands()["report"])
    assert "--nats" not in text
    assert "--config FILE" in text and "--log-level" in text
    assert "default: the totals only" in text


@pytest.mark.parametrize("command", ["bench", "rebuild", "docs"])
def test_cli_py_positionals_say_what_they_take(command: str) -> None:
    parser = _commands()[command]
    bare = [a.dest for a in parser._actions if not a.option_strings and not a.help]
    assert not bare, f"relaydesk {command}: {bare} without a help text"


def test_bench_help_says_what_each_benchmark_measures() -> None:
    text = _help(_commands()["bench"])
    for name in cli.BENCHMARKS:
        assert f"\n  {name} " in text, name
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["bench", "nothing"])
    assert exit_.value.code == 2


def test_the_top_help_lists_every_report_grouping() -> None:
    report = _commands()["report"]
    group_by = next(a for a in report._actions if a.dest == "group_by")
    assert group_by.choices is not None
    assert f"--group-by {'|'.join(group_by.choices)}]" in cli.HELP


def test_the_top_help_names_every_command() -> None:
    """Found by an ops audit: the summary left out ``operators`` and ``customers export``."""
    for command in _commands():
        if command != "relaydesk" and command not in ("bench", "docs") and not command.startswith(("bench ", "docs ")):
            *group, last = command.split()
            assert last in cli.HELP and (not group or group[0] in cli.HELP), command


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["intake", "--bogus"], "usage: relaydesk intake"),
        (["customers", "erase", "cu_1", "--reason", "asked", "--bogus"], "usage: relaydesk customers erase"),
        (["--bogus"], "usage: relaydesk [-h]"),
    ],
)
def test_an_unknown_argument_is_refused_with_its_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an ops audit: ``relaydesk intake --bogus`` printed the top-level usage."""
    with pytest.raises(SystemExit) as exit_:
        cli.parse(cli.build_parser(), argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage) and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_positional_says_what_it_takes(command: str) -> None:
    """Found by an ops audit: ``customers erase --help`` showed a bare ``CUSTOMER``, ``customers
    import`` a bare ``FILE`` (its columns only in the parent command's help)."""
    parser = _commands()[command]
    bare = [
        a.dest
        for a in parser._actions
        if not a.option_strings and not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert not bare, f"relaydesk {command}: {bare} without a help text"


# The tools an operator (or a script) runs whose exit codes mean something beyond 0 and 2.
TOOLS_WITH_EXIT_CODES = sorted(
    {"setup", "rebuild", "dlq list", "dlq show", "dlq retry", "dlq drop"}
    | {f"customers {action}" for action in ("import", "link", "unlink", "merge", "export", "erase", "erase-again")}
    | {"customers migrate-identities"}
)


@pytest.mark.parametrize("command", TOOLS_WITH_EXIT_CODES)
def test_a_tools_help_gives_an_example_and_its_exit_codes(command: str) -> None:
    """Found by an ops audit: none of these said what its exit codes mean (``customers erase``
    exits 2 unconfirmed and 3 with data left in clear; ``rebuild`` 2 when it cannot start), nor
    how Ctrl-C ends it, nor gave an example."""
    text = _help(_commands()[command])
    examples, codes = text.split("\nexamples:\n")[-1].split("\nexit codes:\n")
    assert f"relaydesk {command}" in examples
    assert codes.startswith("  0 ") and "\n  1 " in codes and "\n  130, 143 " in codes, codes
    assert "NATS cannot be reached" in " ".join(codes.split()), codes
