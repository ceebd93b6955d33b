"""The ``relaydesk`` command line: every sub-command, its options and its ``--help`` (parsing
only; ``services.cli`` runs what was asked)."""

from __future__ import annotations

import argparse
import textwrap

from services import logs
from services.cli_args import customer_id, epilog, writable_file

HELP = """\
Relaydesk: an event-sourced conversation router for customer service.

One machine:     relaydesk up                 (embedded NATS, every service, demo agents)
One service:     relaydesk intake | router | projector | api | delivery | connector NAME | sink NAME
                 (each needs RELAYDESK_NATS_URL or [nats] url; built for containers)
Tools:           relaydesk bench decide|crypto|rebuild|ingest|e2e|route|restart|language
                 relaydesk rebuild timelines [--customer ID]
                 relaydesk customers import FILE [--dry-run] | export CUSTOMER | link CUSTOMER IDENTITY
                 relaydesk customers unlink CUSTOMER IDENTITY [--reason TEXT] | merge SURVIVOR OTHER
                 relaydesk customers erase CUSTOMER --reason TEXT [--yes] | erase-again [--dry-run]
                 relaydesk customers migrate-identities [--compact]
                 relaydesk report [--from DATE --to DATE --group-by channel|agent|queue|tier|day|conversation]
                                  [--png FILE] [--json]
                 relaydesk simulate SCENARIO.toml [--seed N] [--policies relaydesk,chatwoot,...]  routing quality
Configuration:   relaydesk config check FILE | show [--config FILE]   (secrets masked) | --version
Operations:      relaydesk status [--json]   streams, consumer lag, leaders, agents, queues, parked (1: no NATS)
                 relaydesk dlq list|show KEY|retry KEY|drop KEY   dead letters and quarantined events
                 relaydesk setup [--nats-auth-config]   streams and buckets (tool role); NATS users config
                 relaydesk operators new-token NAME | list   named operator tokens ([api.operators])
                 relaydesk docs openapi|asyncapi [--check]   the API's and the NATS subjects' contracts

Configuration: --config FILE (TOML), then RELAYDESK_* environment variables, e.g.
RELAYDESK_NATS_URL, RELAYDESK_API_TOKEN, RELAYDESK_TWILIO_AUTH_TOKEN, RELAYDESK_API_PORT;
RELAYDESK_<NAME>_FILE reads a secret from a file. Unknown keys and variables are errors.
Every service serves /healthz, /readyz and /metrics on [health] port (9090).
"""


def _common(parser: argparse.ArgumentParser) -> None:
    """--config, NATS and log options: every service and every tool that speaks to NATS."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: none, built-in defaults)")
    parser.add_argument(
        "--nats-url", metavar="URL", help="NATS server, or several comma-separated (overrides RELAYDESK_NATS_URL)"
    )
    nats_auth = parser.add_argument_group(
        "NATS credentials",
        # Filled here: a command whose examples are laid out by hand (a raw formatter) keeps it as given.
        textwrap.fill(
            "default: [nats] in the config / RELAYDESK_NATS_USER, _PASSWORD, _TOKEN, …; else the role's credentials "
            "`relaydesk up` generated in the data dir. Passwords and tokens only by environment or config file.",
            76,
        ),
    )
    nats_auth.add_argument("--nats-user", metavar="USER", help="NATS user (password: RELAYDESK_NATS_PASSWORD)")
    nats_auth.add_argument("--nats-creds", metavar="FILE", help="NATS .creds file (JWT + nkey; needs nkeys)")
    nats_auth.add_argument("--nats-nkey-seed", metavar="FILE", help="file with an NATS nkey seed (needs nkeys)")
    nats_auth.add_argument("--nats-tls-ca", metavar="FILE", help="CA bundle to verify the NATS server (TLS)")
    nats_auth.add_argument("--nats-tls-cert", metavar="FILE", help="client certificate for NATS (TLS)")
    nats_auth.add_argument("--nats-tls-key", metavar="FILE", help="client certificate's key")
    _log_options(parser)


def _log_options(parser: argparse.ArgumentParser) -> None:
    # The same names RELAYDESK_LOG_LEVEL and RELAYDESK_LOG_FORMAT take (services/logs.py): a
    # typo is refused here, not logged at info (found by an audit).
    parser.add_argument(
        "--log-level",
        type=_log_level,
        choices=logs.LEVELS,
        default=None,
        metavar="LEVEL",
        help="debug, info, warning, error or critical (default: RELAYDESK_LOG_LEVEL, else info; "
        "warning for one-shot tools)",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=logs.FORMATS,
        default=None,
        help="default: RELAYDESK_LOG_FORMAT, else console on a terminal and json off one",
    )


def _log_level(text: str) -> str:
    return logs.LEVEL_ALIASES.get(text.lower(), text.lower())


def _port(text: str, *, lowest: int = 1) -> int:
    """A port flag's value: refused when parsed, not after NATS and every service have started
    (``--api-port 70000`` failed in bind(); found by an audit)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, {lowest} to 65535 (got {text!r})")
    return port


def _port_or_any(text: str) -> int:
    return _port(text, lowest=0)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an argument no command knows is refused by the command it was
    given to, with that command's usage: argparse leaves a sub-command's unknown arguments to
    the top parser, so ``relaydesk intake --bogus`` printed the top-level usage (an ops audit)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        chosen = parser
        while (subs := next((a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)), None)) and (
            name := getattr(args, subs.dest, None)
        ) in subs.choices:
            chosen = subs.choices[name]
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaydesk", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"relaydesk {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="run everything on this machine (embedded NATS unless RELAYDESK_NATS_URL)")
    _common(up)
    up.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the embedded NATS store, SQLite timelines, generated secrets and the operator token "
        "(default: [data] dir / RELAYDESK_DATA_DIR, else ./.relaydesk)",
    )
    up.add_argument(
        "--nats-port",
        type=_port_or_any,
        metavar="N",
        help="embedded NATS port, 0 to 65535 (default 4222; a free one if it is taken; 0: any free port)",
    )
    up.add_argument("--api-port", type=_port, metavar="N", help="API port, 1 to 65535 (default 8080)")
    up.add_argument("--sms-port", type=_port, metavar="N", help="SMS connector port, 1 to 65535 (default 8081)")

    projector = sub.add_parser("projector", help="fold the log into customer timelines")
    _common(projector)
    projector.add_argument(
        "--partition",
        metavar="I/N",
        help="share the work with N-1 other projectors: this one folds customers with hash mod N == I",
    )
    for name, text in (
        ("intake", "turn inbound provider messages into customers and conversations"),
        ("router", "assign conversations to agents (one active, others stand by)"),
        ("api", "serve the HTTP API"),
        ("delivery", "deliver offers and assignments to agents' webhooks, Slack and email"),
    ):
        _common(sub.add_parser(name, help=text))
    connector = sub.add_parser("connector", help="run one channel connector (e.g. sms)")
    _common(connector)
    connector.add_argument("name", help="connector name (installed connectors: relaydesk.connectors entry points)")
    sink = sub.add_parser("sink", help="run one helpdesk sink (e.g. zendesk): two-way ticket sync")
    _common(sink)
    sink.add_argument("name", help="sink name (installed sinks: relaydesk.sinks entry points)")
    sink.add_argument("--retry-parked", action="store_true", help="sync the events it parked once more, then exit")

    setup = sub.add_parser(
        "setup",
        help="create the streams and buckets on NATS (as the tool role)",
        epilog=epilog(
            {
                0: "every stream and bucket is there and up to date (or, --nats-auth-config, printed)",
                1: "NATS cannot be reached or refused a change (the URL, stream or bucket is named)",
                2: "a bad option",
            },
            "relaydesk setup --nats-url nats://nats.internal:4222",
            "relaydesk setup --nats-auth-config > deploy/nats/auth.conf",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(setup)
    setup.add_argument(
        "--nats-auth-config",
        action="store_true",
        help="only print the NATS users and permissions (deploy/nats/auth.conf; passwords from env variables)",
    )

    bench = sub.add_parser(
        "bench",
        help="benchmarks (print figures; not tests)",
        description="Benchmarks: each prints its figures beside a ceiling measured in the same run\n"
        "(README, Performance); they are not tests.",
        epilog="\n".join(f"  {name:<9} {text}" for name, text in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("what", choices=tuple(BENCHMARKS), metavar="BENCHMARK", help="one of those below")
    bench.add_argument(
        "rest", nargs=argparse.REMAINDER, help="the benchmark's own options (relaydesk bench BENCHMARK --help)"
    )

    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild projections from the event log",
        epilog=epilog(
            {
                0: "rebuilt and swapped in",
                1: "the rebuild failed (the store cannot be opened, the customer has no events…): the live"
                " timelines are as they were",
                2: "it could not start: NATS cannot be reached (the URL is named), no event log there, or a bad option",
            },
            "relaydesk rebuild timelines                      # beside `relaydesk up`",
            "relaydesk rebuild timelines --customer cu_7f3a9c --nats-url nats://nats.internal:4222",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(rebuild)
    rebuild.add_argument(
        "what",
        choices=("timelines",),
        help="timelines: a fresh copy of the timeline store from the log, swapped in while the live one serves",
    )
    rebuild.add_argument(
        "--customer",
        metavar="ID",
        type=customer_id,
        help="rebuild only this customer's timeline (exit 1 if the log has none of its events)",
    )
    rebuild.add_argument(
        "--target",
        metavar="PATH_OR_DSN",
        help="a SQLite file or a postgresql:// DSN (default: [projection] dsn, else <data dir>/timelines.db)",
    )

    from services.customers.command_parser import add_parser as add_customers_parser

    add_customers_parser(sub, _common)

    from services.dlq_parser import add_parsers as add_dlq_parsers

    add_dlq_parsers(sub, _common)

    from services.status import add_parser as add_status_parser

    add_status_parser(sub, _common)

    docs = sub.add_parser("docs", help="print the OpenAPI or AsyncAPI document (generated from the code)")
    docs.add_argument(
        "what", choices=("openapi", "asyncapi"), help="openapi: the HTTP API; asyncapi: the NATS subjects"
    )
    docs.add_argument(
        "--check",
        action="store_true",
        help="compare with the committed services/contracts/<what>.json instead of printing (exit 1: differs)",
    )

    report = sub.add_parser("report", help="service metrics (from the API): a table, and a PNG chart with --png")
    # It asks the API over HTTP, not NATS: no NATS options.
    report.add_argument("--config", metavar="FILE", help="TOML config file (default: none, built-in defaults)")
    _log_options(report)
    report.add_argument("--from", dest="start", metavar="DATE", help="ISO date or date-time (default: 7 days ago)")
    report.add_argument("--to", dest="end", metavar="DATE", help="exclusive; a plain date includes that day")
    report.add_argument(
        "--group-by",
        choices=("channel", "agent", "queue", "tier", "day", "conversation"),
        help="one row per group (default: the totals only)",
    )
    report.add_argument("--reopen-hours", type=float, metavar="H", help="reopen window (default 24)")
    report.add_argument(
        "--tz", metavar="ZONE", help="IANA zone of the days, hours and plain dates, e.g. Europe/Paris (default UTC)"
    )
    report.add_argument(
        "--png", metavar="FILE", type=writable_file, help="also write a chart: SLA attainment and waiting time per hour"
    )
    report.add_argument("--json", action="store_true", help="print the API's JSON instead of the table")
    report.add_argument("--api", metavar="URL", help="default: http://<[api] host>:<[api] port>")
    report.add_argument("--token", help="operator token (default: RELAYDESK_API_TOKEN or <data dir>/api-token)")
    report.add_argument("--data-dir", metavar="DIR", help="where `relaydesk up` keeps the token")

    from services.simulator.command import add_arguments as add_simulate_arguments

    add_simulate_arguments(sub.add_parser("simulate", help="simulate a day of traffic: the router against baselines"))

    from services.config_command import add_parser as add_config_parser

    add_config_parser(sub)

    from services.operators_command import add_parser as add_operators_parser

    add_operators_parser(sub)
    _describe(parser)
    return parser


# `relaydesk bench <name>`: one module each in services/bench/.
BENCHMARKS = {
    "decide": "the cost of one routing decision, 100-10,000 agents x 1,000-100,000 waiting",
    "crypto": "append, replay, rebuild and intake with and without sealing personal data",
    "rebuild": "`rebuild timelines` of an N-event log into SQLite and PostgreSQL",
    "ingest": "signed Twilio webhooks per second through one SMS connector",
    "e2e": "signed webhooks to an offer on the log, the whole system",
    "route": "rd.inbound.sms to an offer on the log: rate, p50/p99 latency, CPU",
    "restart": "router, API and delivery start on a long log, with and without a snapshot",
    "language": "how often intake detects a short message's language right (labelled corpus)",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relaydesk")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every sub-command's ``--help`` starts with a line saying what it does: its ``help=``
    text, unless it was given its own ``description=`` (so new commands get one for free)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            if not child.description and helps.get(name):
                text = str(helps[name])
                child.description = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
            _describe(child)
