"""What ``relaydesk customers`` takes: its actions, their options and ``--help``
(``add_parser``, called by ``services/cli_parser.py``). What each action does is
``services/customers/command.py``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

from services.bench.args import positive
from services.cli_args import customer_id, epilog, readable_file, writable_file

HELP = """\
Customers, straight on the event log:
(RELAYDESK_NATS_URL or --nats-url; beside `relaydesk up`, its embedded NATS is found)

  relaydesk customers import FILE [--dry-run]     CSV or JSON Lines: identity/identities, tier, flags,
                                                  preferred_language, crm_id; bad lines are reported
                                                  by number, the others imported; re-running changes nothing
  relaydesk customers link CUSTOMER IDENTITY [--merge]
  relaydesk customers unlink CUSTOMER IDENTITY [--reason TEXT]
                                                  take an address away (linked by mistake, a number
                                                  passed on): its next message starts a new customer
  relaydesk customers merge SURVIVOR OTHER        OTHER is merged into SURVIVOR
  relaydesk customers export CUSTOMER [--out FILE]
                                                  everything held about a customer and the customers
                                                  merged into it, as JSON (GDPR Art. 15): profile,
                                                  addresses, every event opened, chat history
  relaydesk customers erase CUSTOMER --reason TEXT [--yes]
                                                  erase a customer and every customer merged into
                                                  it for good (GDPR Art. 17): keys, addresses, raw
                                                  messages, chat history, attachments; timelines redacted
  relaydesk customers erase-again [--dry-run]
                                                  after NATS was restored from a backup taken before
                                                  some erasures: erase those customers again, from the
                                                  register in the timelines store (safe to run again)
  relaydesk customers migrate-identities [--compact]
                                                  re-key rd_identity entries written before keys were
                                                  hashed; --compact rewrites the bucket (intake stopped)
"""


CUSTOMER_HELP = "a customer id, e.g. cu_7f3a9c (as the console and the API show it)"
# Every action connects to NATS: that it cannot is exit 1, whatever else 1 means there.
NATS_DOWN = "NATS cannot be reached (the URL tried is named)"


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser(
        "customers",
        help="import from CSV / JSON Lines, link or unlink an address, merge, export or erase a customer"
        " (again, after a restore)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str, codes: dict[int, str], *examples: str, **more: Any) -> argparse.ArgumentParser:
        # Each action's --help ends with an example and what its exit codes mean (an ops audit:
        # `customers erase --help` named neither its confirmation nor its exit 3).
        made: argparse.ArgumentParser = actions.add_parser(
            name,
            help=text,
            epilog=epilog({**codes, 1: f"{codes[1]}; or {NATS_DOWN}" if 1 in codes else NATS_DOWN}, *examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **more,
        )
        common(made)
        return made

    imp = action(
        "import",
        "import customers from a CSV or JSON Lines file",
        {
            0: "every line imported (or, with --dry-run, every line would be)",
            1: "some lines failed: each is named by its number, the others were imported",
            2: "FILE cannot be read (missing, a directory, not UTF-8), or a bad option",
        },
        "relaydesk customers import customers.csv --dry-run",
        "relaydesk customers import customers.jsonl",
    )
    imp.add_argument(
        "file",
        metavar="FILE",
        type=readable_file,
        help="CSV with a header line, or JSON Lines: identity or identities, tier, flags, preferred_language, crm_id",
    )
    imp.add_argument("--dry-run", action="store_true", help="check every line and say what would change; write nothing")
    imp.add_argument("--format", choices=("csv", "jsonl"), help="default: by the file name, else by its content")
    imp.add_argument(
        "--concurrency", type=positive, default=8, metavar="N", help="lines imported side by side (default 8)"
    )
    link = action(
        "link",
        "give an address to a customer",
        {0: "linked (or it already was)", 1: "refused: the reason is printed (no such customer, a bad address…)"},
        "relaydesk customers link cu_7f3a9c email:ann@example.com",
    )
    link.add_argument("customer", metavar="CUSTOMER", type=customer_id, help=CUSTOMER_HELP)
    link.add_argument("identity", metavar="IDENTITY", help="e.g. email:ann@example.com or sms:+15551234567")
    link.add_argument("--merge", action="store_true", help="if another customer has the address, merge it in")
    unlinking = action(
        "unlink",
        "take an address away from a customer",
        {0: "unlinked (or it already was)", 1: "refused: the reason is printed (no such customer, not its address…)"},
        'relaydesk customers unlink cu_7f3a9c sms:+15551234567 --reason "number passed on"',
    )
    unlinking.add_argument("customer", metavar="CUSTOMER", type=customer_id, help=CUSTOMER_HELP)
    unlinking.add_argument("identity", metavar="IDENTITY", help="e.g. sms:+15551234567")
    unlinking.add_argument("--reason", default="", help="why (kept on the log, sealed like the address)")
    merge = action(
        "merge",
        "merge OTHER into SURVIVOR",
        {0: "merged (or it already was)", 1: "refused: the reason is printed (no such customer, the same one…)"},
        "relaydesk customers merge cu_survivor cu_other",
    )
    merge.add_argument("survivor", metavar="SURVIVOR", type=customer_id, help="the customer id that stays")
    merge.add_argument(
        "other", metavar="OTHER", type=customer_id, help="the customer id merged into SURVIVOR (it then points there)"
    )
    export = action(
        "export",
        "everything held about a customer, as JSON (a subject access request)",
        {
            0: "exported",
            1: "refused: the reason is printed (no such customer…)",
            2: "FILE cannot be written (checked before the export), or a bad option",
        },
        "relaydesk customers export cu_7f3a9c --out ann.json",
    )
    export.add_argument("customer", metavar="CUSTOMER", type=customer_id, help=CUSTOMER_HELP)
    export.add_argument(
        "--out",
        metavar="FILE",
        type=writable_file,
        help="write it to FILE, whole or not at all (made readable by its owner only); default: stdout",
    )
    erase = action(
        "erase",
        "erase a customer (and the customers merged into it) for good",
        {
            0: "erased",
            1: "refused: the reason is printed (no such customer…)",
            2: "not confirmed (at a terminal it asks you to type the customer id; elsewhere pass --yes)",
            3: "erased, but events on the log hold personal data in clear no key erases (named; README, Erasure)",
        },
        'relaydesk customers erase cu_7f3a9c --reason "DSR-42"',
    )
    erase.add_argument("customer", metavar="CUSTOMER", type=customer_id, help=CUSTOMER_HELP)
    erase.add_argument("--reason", required=True, help="why (the request's reference); kept on the log")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    again = action(
        "erase-again",
        "erase again the customers whose erasure a restore of NATS from an older backup undid",
        {
            0: "every undone erasure done again (or none to do)",
            1: "one was refused (named), or the erasure register cannot be read",
            3: "done, but events on the log hold personal data in clear (as erase)",
        },
        "relaydesk customers erase-again --dry-run",
        description=textwrap.fill(
            "After NATS was restored from a backup taken before some erasures, those customers are"
            " back, keys included. This reads the erasure register the projector keeps in the timelines store"
            " (it survives the restore), erases again every registered customer whose CustomerErased is not on"
            " the log any more (with the reason first given), one line per customer, and finishes any of their"
            " erasures left under way. Safe to run again: a run cut short is finished by the next one. The"
            " projector's relaydesk_erasures_undone gauge goes to 0 as it reads the new erasures.",
            78,
        ),
    )
    again.add_argument("--dry-run", action="store_true", help="list the erasures to apply again; change nothing")
    migrate = action(
        "migrate-identities",
        "re-key rd_identity entries of earlier versions",
        {0: "re-keyed (and rewritten, with --compact)", 1: "--compact refused (intake is running) or failed (named)"},
        "relaydesk customers migrate-identities --compact    # intake and the API stopped",
    )
    migrate.add_argument(
        "--compact",
        action="store_true",
        help="then rewrite the bucket so no removed entry's bytes stay on disk (stop intake and the API first)",
    )
