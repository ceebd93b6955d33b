"""What a customer sent, printed on an operator's terminal, shows its control sequences escaped
instead of running them: the console log format (a library's message, a traceback quoting a
mail) and ``relaydesk dlq list/show`` (an unparseable mail's first bytes, its parse error).
Found by an audit: ESC [2J cleared the screen, OSC 52 wrote the clipboard, CR LF forged a line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from rich.console import Console

from events.parking import ParkedMessage
from services import dlq, logs
from services.terminal_text import printable

# Clear the screen, put "pwned" on the clipboard (OSC 52), a C1 CSI, a forged line, a bidi override.
HOSTILE = "Ann\x1b[2J\x1b]52;c;cHduZWQ=\x07\x9b31m\r\n2026-12-07 [info] api.operator_login\u202egnp.exe"
UNSAFE = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


def _safe(text: str) -> None:
    for char in UNSAFE:
        assert char not in text, f"{char!r} printed as it is"


def test_printable_escapes_what_a_terminal_would_obey_and_keeps_the_rest() -> None:
    assert printable(HOSTILE) == (
        "Ann\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07\\x9b31m\\x0d\\x0a2026-12-07 [info] api.operator_login\\u202egnp.exe"
    )
    assert printable("line 1\n\tline 2\r\n", lines=True) == "line 1\n\tline 2\\x0d\n"
    assert printable("Zoë 山田 ✉ \u2028", lines=True) == "Zoë 山田 ✉ \u2028"
    assert printable("bytes \udcff") == "bytes \\udcff"  # a lone surrogate would make the print fail


@pytest.fixture
def console_logs() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    logs.configure("info", "console")
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("console_logs")
def test_console_log_lines_show_escapes_in_messages_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise ValueError(f"bad header {HOSTILE}")
    except ValueError:
        structlog.get_logger("t").exception("inbound.crashed")
        logging.getLogger("some.library").exception(f"could not read {HOSTILE}")
    err = capsys.readouterr().err
    _safe(err)
    assert "inbound.crashed" in err and "Traceback (most recent call last):\n" in err  # still readable
    assert "\\x1b[2J" in err and "\\x1b]52;c;" in err
    assert "could not read Ann" in err


def test_console_log_format_is_the_only_one_changed() -> None:
    event = {"event": "a\x1bb", "exception": "x\x1by"}
    assert logs.terminal_safe(None, "info", dict(event)) == {"event": "a\\x1bb", "exception": "x\\x1by"}


def _parked() -> ParkedMessage:
    return ParkedMessage(
        stream="RD_INBOUND",
        seq=7,
        subject="rd.inbound.email",
        kind="quarantined",
        reader="connector:email",
        error=f"unparseable mail: {HOSTILE}",
        parked_at=datetime(2026, 12, 7, tzinfo=UTC),
        data=f"From: x@example.com\r\nSubject: {HOSTILE}\r\n\r\nbody\n".encode(),
        headers={"Relaydesk-Raw-Object": f"raw/{HOSTILE}"},
    )


def test_dlq_show_and_list_print_what_a_mail_carried_escaped() -> None:
    out = io.StringIO()
    console = Console(file=out, soft_wrap=True, highlight=False, markup=False, force_terminal=False)
    dlq._print_one(console, _parked())
    dlq._print_list(console, [_parked()])
    text = out.getvalue()
    _safe(text)
    assert "Subject: Ann\\x1b[2J" in text  # the operator still sees what was there
    assert "\\x0d\nbody\n" in text  # the mail keeps its lines
