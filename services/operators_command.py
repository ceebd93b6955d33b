"""``relaydesk operators new-token NAME`` and ``relaydesk operators list [--config FILE]``.

``new-token`` makes a named operator token offline (services.api.operators): it prints the
token once and the ``[api.operators]`` line that grants it; the API keeps only the hash.
``list`` prints the names a configuration grants.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.api import operators


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "operators",
        help="named operator tokens: make one, list who has one",
        description="Named operator tokens act with the operator's rights as operator:<name>, the actor "
        "on every event they cause. The configuration keeps their sha256 under [api.operators].",
    )
    actions = parser.add_subparsers(dest="operators_action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new-token",
        help="print a new token for NAME and the [api.operators] line that grants it",
        description="Print a new token for NAME (shown once: hand it to that person) and the line to put "
        "under [api.operators] in the API's config file: an API started with --config takes it within 5 s, "
        "no restart. Taking the line out revokes the token the same way. Nothing is stored by this command.",
    )
    new.add_argument("name", metavar="NAME", help="who will hold it: lowercase letters, digits, '.', '_', '-'")
    listing = actions.add_parser("list", help="the operator names a config file grants")
    listing.add_argument("--config", metavar="FILE", help="TOML config file (default: none, built-in defaults)")


def operators_command(args: argparse.Namespace) -> int:
    if args.operators_action == "new-token":
        if (why := operators.name_problem(args.name)) is not None:
            print(f"relaydesk operators: {why}", file=sys.stderr)
            return 2
        token = operators.new_token()
        print(token)
        print(
            "\nAdd under [api.operators] in the API's config file (an API started with --config takes it"
            " within 5 s, no restart):\n"
            f'{args.name} = "{operators.hashed(token)}"\n'
            f"The token above is shown once; give it to {args.name} alone.",
            file=sys.stderr,
        )
        return 0
    from services.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as err:
        print("relaydesk operators: the configuration has problems:", *err.problems, sep="\n  ", file=sys.stderr)
        return 1
    for name in sorted(config.api.operators):
        print(f"operator:{name}")
    if not config.api.operators:
        print("no named operators: only the shared [api] token (actor 'operator')", file=sys.stderr)
    return 0
