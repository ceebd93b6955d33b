"""What ``relaydesk dlq`` takes: its actions, their options and ``--help`` (``add_parsers``,
called by ``services/cli_parser.py``). What each action does is ``services/dlq.py``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli_args import epilog, parked_key
from services.dlq import KINDS

DLQ_HELP = """\
Parked messages:
(RELAYDESK_NATS_URL or --nats-url; beside `relaydesk up`, its embedded NATS is found)

  relaydesk dlq list [--kind dead_letter|quarantined] [--json]
                                  every parked message: key, kind, reader, subject, deliveries, error
  relaydesk dlq show KEY [--json] one record with its headers and raw data
  relaydesk dlq retry KEY         publish a dead letter again on its subject (fresh Nats-Msg-Id
                                  retry:KEY:N), then drop the record; quarantined log events are
                                  refused (the log is append-only: fix forward, then drop)
  relaydesk dlq drop KEY          forget a record (after fixing forward, or when it is junk)

A KEY is <stream>.<sequence>, e.g. RD_INBOUND.42.
"""


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="dead letters and quarantined events: list, show, retry, drop",
        description=DLQ_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    nats_down = "NATS cannot be reached (the URL tried is named), refuses the login or the request, or does not answer"

    def action(
        name: str, text: str, codes: dict[int, str], example: str, *, json: bool = False
    ) -> argparse.ArgumentParser:
        # What each exit code means, and an example (found by an ops audit: none said either).
        made: argparse.ArgumentParser = actions.add_parser(
            name,
            help=text,
            epilog=epilog(
                {2: "KEY is not of the shape <stream>.<sequence>, or a bad option", **codes},
                example,
                json_failures=json,
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common(made)
        return made

    listing = action(
        "list",
        "list parked messages",
        {0: "listed (maybe none)", 1: nats_down, 2: "a bad option"},
        "relaydesk dlq list --json",
        json=True,
    )
    listing.add_argument("--kind", choices=KINDS, help="only this kind (default: both)")
    listing.add_argument("--json", action="store_true", help="print JSON (one object with a list)")
    gone = "nothing parked under KEY (`relaydesk dlq list` prints the keys)"
    show = action(
        "show",
        "show one parked message with its headers and data",
        {0: "shown", 1: f"{gone}; or {nats_down}"},
        "relaydesk dlq show RD_INBOUND.42",
        json=True,
    )
    show.add_argument("key", metavar="KEY", type=parked_key, help=KEY_HELP)
    show.add_argument("--json", action="store_true", help="print JSON")
    retry = action(
        "retry",
        "publish a dead letter again on its original subject, then drop the record",
        {
            0: "re-published (or it had been: deduplicated) and dropped",
            1: f"{gone}, or a quarantined event (never re-driven: fix forward, then drop); or {nats_down}",
        },
        "relaydesk dlq retry RD_INBOUND.42",
    )
    retry.add_argument("key", metavar="KEY", type=parked_key, help=KEY_HELP)
    drop = action(
        "drop", "forget a parked record", {0: "dropped", 1: f"{gone}; or {nats_down}"}, "relaydesk dlq drop RD_EVENTS.7"
    )
    drop.add_argument("key", metavar="KEY", type=parked_key, help=KEY_HELP)


KEY_HELP = "<stream>.<sequence>, as `dlq list` prints it, e.g. RD_INBOUND.42"
