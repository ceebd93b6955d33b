"""Argument types for the ``relaydesk`` tools: a value of the wrong shape, or a file that cannot
be read or written, is refused when the command line is parsed (exit 2, the command's usage and
a line naming what was wrong and what to do), before NATS is reached or any work is done.

Found by an ops audit: ``customers export ../x`` connected to NATS and answered ``refused (400):
not a customer id``; ``rebuild timelines --customer 'cu_1 '`` said ``not a valid subject token``;
``dlq retry nokey`` said ``nothing parked under nokey``; ``customers import`` of a missing file
first waited for an unreachable NATS (30 s) and only then named the file; ``customers export
--out /no/such/dir/x.json`` read every event of the customer and then failed to write.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from events import subjects
from events.parking import is_parked_key

ID_SHAPE = f"letters, digits, '_' and '-', 1 to {subjects.TOKEN_MAX_LENGTH} characters"


def customer_id(text: str) -> str:
    """A customer id as the log keys it (one NATS subject token, e.g. ``cu_7f3a9c``)."""
    if subjects.is_token(text):
        return text
    hint = ""
    if text.strip() != text and subjects.is_token(text.strip()):
        hint = "; it has spaces around it (copied with them?)"
    elif "@" in text or ":" in text:
        hint = (
            "; that looks like an address, not a customer id: find its customer with"
            " GET /v1/customers?q=<address> (or the console's search)"
        )
    raise argparse.ArgumentTypeError(f"not a customer id: {text!r} ({ID_SHAPE}, e.g. cu_7f3a9c){hint}")


def parked_key(text: str) -> str:
    """A ``relaydesk dlq`` key: ``<stream>.<sequence>`` as ``dlq list`` prints it."""
    if is_parked_key(text):
        return text
    raise argparse.ArgumentTypeError(
        f"not a parked message's key: {text!r} (<stream>.<sequence>, e.g. RD_INBOUND.42; `relaydesk dlq list`"
        " prints every key)"
    )


def readable_file(text: str) -> str:
    """A file to read (``customers import FILE``): there, a file, readable by this user."""
    path = Path(text)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"no such file: {text} (check the path)") from None
    except IsADirectoryError:
        raise argparse.ArgumentTypeError(f"{text} is a directory: give the file in it") from None
    except PermissionError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text}: permission denied (run as a user who may read it, or change its mode)"
        ) from None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {err.strerror or err}") from None
    return text


def writable_file(text: str) -> str:
    """A file to write (``customers export --out``, ``report --png``): its folder exists and may
    be written in, and it is not a folder itself. Checked before the work, not after it."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name a file in it, e.g. {path / 'out'}")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: no directory {folder} (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: permission denied in {folder} (choose a directory you may write in)"
        )
    return text


INTERRUPTED = "stopped by Ctrl-C (130) or SIGTERM (143): one line says what was left and how to finish"


def epilog(codes: dict[int, str], *examples: str, json_failures: bool = False) -> str:
    """The end of a tool's ``--help``: examples, then what each exit code means (set it with
    ``argparse.RawDescriptionHelpFormatter`` so the lines stay as laid out here); with
    ``json_failures``, what its ``--json`` prints on a failure (``tool_runner.say_failure``)."""
    lines = []
    if examples:
        lines += ["examples:", *(f"  {example}" for example in examples), ""]
    lines.append("exit codes:")
    for code, text in [*sorted(codes.items()), ("130, 143", INTERRUPTED)]:
        lines += textwrap.wrap(text, 78, initial_indent=f"  {code:<9} ", subsequent_indent=" " * 12)
    if json_failures:
        lines += ["", *textwrap.wrap(JSON_FAILURES, 78)]
    return "\n".join(lines)


# What a tool's --json prints when it fails (services.tool_runner.say_failure).
JSON_FAILURES = (
    'With --json, a failure still prints one JSON object on stdout, {"error": {"code": CODE, "message": TEXT}}, '
    "besides its line on stderr and the exit code above; CODE is one of nats_unreachable, "
    "nats_credentials_refused, nats_no_answer, permission_denied, not_set_up, not_found, conflict, unavailable."
)
