"""What ``relaydesk customers`` takes: its actions, their options and ``--help``
(``add_parser``, called by ``services/cli_parser.py``). What each action does is
``services/customers/command.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.bench.args import positive

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


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser(
        "customers",
        help="import from CSV / JSON Lines, link or unlink an address, merge, export or erase a customer"
        " (again, after a restore)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser("import", help="import customers from a CSV or JSON Lines file")
    common(imp)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--dry-run", action="store_true", help="check every line and say what would change; write nothing")
    imp.add_argument("--format", choices=("csv", "jsonl"), help="default: by the file name, else by its content")
    imp.add_argument(
        "--concurrency", type=positive, default=8, metavar="N", help="lines imported side by side (default 8)"
    )
    link = actions.add_parser("link", help="give an address to a customer")
    common(link)
    link.add_argument("customer", metavar="CUSTOMER")
    link.add_argument("identity", metavar="IDENTITY", help="e.g. email:ann@example.com or sms:+15551234567")
    link.add_argument("--merge", action="store_true", help="if another customer has the address, merge it in")
    unlinking = actions.add_parser("unlink", help="take an address away from a customer")
    common(unlinking)
    unlinking.add_argument("customer", metavar="CUSTOMER")
    unlinking.add_argument("identity", metavar="IDENTITY", help="e.g. sms:+15551234567")
    unlinking.add_argument("--reason", default="", help="why (kept on the log, sealed like the address)")
    merge = actions.add_parser("merge", help="merge OTHER into SURVIVOR")
    common(merge)
    merge.add_argument("survivor", metavar="SURVIVOR")
    merge.add_argument("other", metavar="OTHER")
    export = actions.add_parser("export", help="everything held about a customer, as JSON (a subject access request)")
    common(export)
    export.add_argument("customer", metavar="CUSTOMER")
    export.add_argument(
        "--out", metavar="FILE", help="write it to FILE (made readable by its owner only); default: stdout"
    )
    erase = actions.add_parser("erase", help="erase a customer (and the customers merged into it) for good")
    common(erase)
    erase.add_argument("customer", metavar="CUSTOMER")
    erase.add_argument("--reason", required=True, help="why (the request's reference); kept on the log")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    again = actions.add_parser(
        "erase-again",
        help="erase again the customers whose erasure a restore of NATS from an older backup undid",
        description="After NATS was restored from a backup taken before some erasures, those customers are"
        " back, keys included. This reads the erasure register the projector keeps in the timelines store"
        " (it survives the restore), erases again every registered customer whose CustomerErased is not on"
        " the log any more (with the reason first given), one line per customer, and finishes any of their"
        " erasures left under way. Safe to run again: a run cut short is finished by the next one. The"
        " projector's relaydesk_erasures_undone gauge goes to 0 as it reads the new erasures.",
    )
    common(again)
    again.add_argument("--dry-run", action="store_true", help="list the erasures to apply again; change nothing")
    migrate = actions.add_parser("migrate-identities", help="re-key rd_identity entries of earlier versions")
    common(migrate)
    migrate.add_argument(
        "--compact",
        action="store_true",
        help="then rewrite the bucket so no removed entry's bytes stay on disk (stop intake and the API first)",
    )
