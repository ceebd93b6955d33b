"""The ``relaydesk`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from services import logs
from services.config import Config, ConfigError, load
from services.tool_runner import interrupted_as, run_tool

T = TypeVar("T")

HELP = """\
Relaydesk: an event-sourced conversation router for customer service.

One machine:     relaydesk up                 (embedded NATS, every service, demo agents)
One service:     relaydesk intake | router | projector | api | delivery | connector NAME | sink NAME
                 (each needs RELAYDESK_NATS_URL or [nats] url; built for containers)
Tools:           relaydesk bench decide|crypto|rebuild|ingest|e2e|route|restart|language
                 relaydesk rebuild timelines [--customer ID]
                 relaydesk customers import FILE [--dry-run] | link CUSTOMER IDENTITY | merge SURVIVOR OTHER
                 relaydesk customers erase CUSTOMER --reason TEXT [--yes] | migrate-identities [--compact]
                 relaydesk report [--from DATE --to DATE --group-by channel|agent|queue|day|conversation] [--png FILE]
                 relaydesk simulate SCENARIO.toml [--seed N] [--policies relaydesk,chatwoot,...]  routing quality
Configuration:   relaydesk config check FILE | show [--config FILE]   (secrets masked) | --version
Operations:      relaydesk status [--json]   streams, consumer lag, leaders, agents, queues, parked (1: no NATS)
                 relaydesk dlq list|show KEY|retry KEY|drop KEY   dead letters and quarantined events
                 relaydesk setup [--nats-auth-config]   streams and buckets (tool role); NATS users config
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
        "default: [nats] in the config / RELAYDESK_NATS_USER, _PASSWORD, _TOKEN, …; else the role's credentials "
        "`relaydesk up` generated in the data dir. Passwords and tokens only by environment or config file.",
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

    setup = sub.add_parser("setup", help="create the streams and buckets on NATS (as the tool role)")
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

    rebuild = sub.add_parser("rebuild", help="rebuild projections from the event log")
    _common(rebuild)
    rebuild.add_argument(
        "what",
        choices=("timelines",),
        help="timelines: a fresh copy of the timeline store from the log, swapped in while the live one serves",
    )
    rebuild.add_argument(
        "--customer",
        metavar="ID",
        help="rebuild only this customer's timeline (exit 1 if the log has none of its events)",
    )
    rebuild.add_argument(
        "--target",
        metavar="PATH_OR_DSN",
        help="a SQLite file or a postgresql:// DSN (default: [projection] dsn, else <data dir>/timelines.db)",
    )

    from services.customers.command import add_parser as add_customers_parser

    add_customers_parser(sub, _common)

    from services.dlq import add_parsers as add_dlq_parsers

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
        choices=("channel", "agent", "queue", "day", "conversation"),
        help="one row per group (default: the totals only)",
    )
    report.add_argument("--reopen-hours", type=float, metavar="H", help="reopen window (default 24)")
    report.add_argument(
        "--tz", metavar="ZONE", help="IANA zone of the days, hours and plain dates, e.g. Europe/Paris (default UTC)"
    )
    report.add_argument("--png", metavar="FILE", help="also write a chart: SLA attainment and waiting time per hour")
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


def _config(args: argparse.Namespace) -> Config:
    try:
        config = load(args.config)
    except ConfigError as err:
        raise SystemExit("\n".join(f"relaydesk: {problem}" for problem in err.problems)) from err
    if getattr(args, "nats_url", None):
        from services.nats_auth import server_list

        try:
            config.nats.url = ",".join(server_list(args.nats_url))
        except ConfigError as err:
            raise SystemExit(f"relaydesk: --nats-url: {err}") from err
    for option in ("user", "creds", "nkey_seed", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(args, f"nats_{option}", None)
        if value:
            setattr(config.nats, option, value)
    if getattr(args, "data_dir", None):
        config.data.dir = args.data_dir
    if not config.nats.url and args.command in ONE_SHOT:
        # A tool on the machine where `relaydesk up` runs finds its embedded server.
        from services.up import embedded_url

        config.nats.url = embedded_url(config.data_dir)
    # `is not None`: --nats-port 0 (any free port) was dropped as false (found by an audit).
    if getattr(args, "nats_port", None) is not None:
        config.nats.port = args.nats_port
    if getattr(args, "api_port", None) is not None:
        config.api.port = args.api_port
    if getattr(args, "partition", None):
        config.projection.partition = args.partition
    try:
        config.projection.partition_pair()
    except ConfigError as err:
        raise SystemExit(f"relaydesk: {err}") from err
    if getattr(args, "sms_port", None) is not None:
        config.connectors.setdefault("sms", {})["port"] = args.sms_port
    return config


def _run_service(service: Callable[..., Coroutine[Any, Any, None]], config: Config, *extra: Any, role: str) -> int:
    """Run one service as NATS role ``role`` (intake, router, …, connector-<name>)."""
    from services.bootstrap import connect
    from services.nats_connection import until_connection_lost

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        running: list[Health] = []

        def on_signal() -> None:
            stop.set()
            # Still starting (connecting, waiting for NATS or a stream): nothing in flight to
            # finish, so stop now. A supervisor's grace (10 s in compose, 30 s in Kubernetes)
            # ran out while start-up waited up to a minute deaf to SIGTERM (found by an audit).
            if me is not None and not (running and running[0].checks):
                me.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        # The health port first: a port taken fails the start before anything else happens.
        async with standalone_health(config) as health, connect(config, name=f"relaydesk-{role}", role=role) as bus:
            running.append(health)  # its checks, once the service adds them, say it runs
            await until_connection_lost(service(config, bus, *extra, stop, health=health), bus.nc, stop)

    from services.data_dir import DataDirUnusable
    from services.health import Health
    from services.runners import ServiceFailed, standalone_health

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            structlog.get_logger(__name__).info("service.stopped_while_starting", role=role)
        except (ServiceFailed, DataDirUnusable) as err:
            # A reason a person can act on (a port in use, a missing setting), not a traceback.
            raise SystemExit(f"relaydesk: {err}") from None
    return 0


def _interrupted_note(args: argparse.Namespace) -> str:
    """What a one-shot tool that does not say it itself (``run_tool``) leaves when interrupted."""
    if args.command == "dlq" and args.action == "retry":
        return "run it again to be sure the retry is done (a re-publish is deduplicated)"
    if args.command == "dlq" and args.action == "drop":
        return "run it again to be sure the drop is done (it says so if the record is gone)"
    # A tool that says it itself was not under way yet (it was loading its configuration,
    # connecting); the others only read (status, report, dlq list and show).
    return "nothing was changed"


def _cluster_auth_config(config: Config) -> str:
    """``--nats-auth-config``: deploy/nats/auth.conf's users, plus a user ``connector-<name>``
    (as ``relaydesk up`` names them) for every installed plug-in connector and every enabled
    ``[connectors.<name>]`` table of the config; nothing more without either."""
    from connectors.sdk import registry
    from connectors.sdk.errors import ConnectorNotFound
    from services.nats_permissions import cluster_auth_config, cluster_connectors
    from services.up import is_enabled

    named = [name for name, table in config.connectors.items() if is_enabled(table.get("enabled", True))]
    for name in sorted(set(named) - set(registry.available())):
        print(f"relaydesk: connector {name!r} is not installed here: its user serves channel {name!r}", file=sys.stderr)
    try:
        channels = cluster_connectors(named)
    except ConnectorNotFound as err:  # an installed plug-in that does not load
        raise SystemExit(f"relaydesk: {err}") from None
    return cluster_auth_config(tuple(channels), channels=channels)


def _setup(config: Config, *, print_auth: bool) -> int:
    """``relaydesk setup``: the streams and buckets, created or updated by the tool role."""
    if print_auth:
        print(_cluster_auth_config(config), end="")
        return 0
    if not config.nats.url:
        raise SystemExit("relaydesk setup: set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)")
    from services.bootstrap import connect

    async def main() -> None:
        # Only setup lowers a retention limit that deletes stored messages (shrink_limits).
        async with connect(config, name="relaydesk-setup", role="tool", shrink_limits=True) as bus:
            print(f"streams and buckets ready on {config.nats.url} (as {bus.auth.describe()})")

    # Each stream and bucket is created or updated on its own: running it again completes the set.
    run_tool(main(), interrupted="some streams or buckets may be missing; run it again to finish")
    return 0


# The services a container runs, one each; `up` and the tools speak to a person.
SERVICE_COMMANDS = frozenset({"intake", "router", "projector", "api", "delivery", "connector", "sink"})
ONE_SHOT = frozenset({"customers", "rebuild", "report", "dlq", "status", "setup"})


def _rebuild(args: argparse.Namespace, config: Config) -> int:
    from services.rebuild import rebuild_command

    if not config.nats.url:
        raise SystemExit("relaydesk rebuild: set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)")
    target = args.target or config.projection_target
    # A swap (or a customer's replacement) once begun is let finish (services/rebuild.py): an
    # interruption that ends the command came before it.
    replaced = f"customer {args.customer}'s rows were not replaced" if args.customer else "nothing was swapped in"
    return run_tool(
        rebuild_command(config.nats.url, target, args.customer),
        interrupted=f"{replaced}, the live timelines are as they were; safe to run again",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            with interrupted_as(_interrupted_note(args)) if args.command in ONE_SHOT else contextlib.nullcontext():
                return _main(parser, args)
        except logs.LogSettingError as err:
            # RELAYDESK_LOG_LEVEL or _FORMAT mistyped: one line at start wherever logging is set
            # up first (here, or a benchmark), not a service quietly logging at info.
            raise SystemExit(f"relaydesk: {err}") from None
    except SystemExit as err:
        # A service's last word in the log's format: one JSON line a log pipeline keeps, not a
        # plain-text line among the JSON ones (found by an audit). Tools speak to a person.
        if isinstance(err.code, str) and args.command in SERVICE_COMMANDS and logs.is_json(args.log_format):
            logs.fatal(err.code.removeprefix("relaydesk: "), command=args.command)
            raise SystemExit(1) from None
        raise


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "docs":  # offline: no config, no NATS
        from services.contracts import command as docs_command

        return docs_command(args.what, check_only=args.check)
    if args.command == "simulate":  # offline: no config, no NATS
        from services.simulator.command import main as simulate_main

        return simulate_main(args)
    if args.command == "config":
        from services.config_command import config_command

        return config_command(args)
    if args.command == "operators":  # offline: a token made here, or the config file read
        from services.operators_command import operators_command

        return operators_command(args)
    if args.command == "bench":
        import importlib

        # One module per benchmark in services/bench/, named as the choice (`bench decide`, …).
        bench = importlib.import_module(f"services.bench.{args.what}")
        return int(bench.main(args.rest))
    # Services log their work; one-shot tools (import, rebuild, report) speak to a person,
    # and info lines would bury their report: only warnings unless asked.
    quiet = args.command in ONE_SHOT and not os.environ.get("RELAYDESK_LOG_LEVEL")
    logs.configure(args.log_level or ("warning" if quiet else None), args.log_format)
    config = _config(args)
    from services.bootstrap import configure_tools

    configure_tools(config)  # rebuild, customers, dlq, status connect as the tool role
    if args.command not in ONE_SHOT:  # [tracing]: off by default, and then no OpenTelemetry import
        from services import tracing

        role = f"connector-{args.name}" if args.command == "connector" else args.command
        tracing.configure(config.tracing, service=role)
    if args.command == "rebuild":
        return _rebuild(args, config)
    from services import runners  # the service stack (~1 s of imports): not on the rebuild path

    if args.command == "setup":
        return _setup(config, print_auth=args.nats_auth_config)
    if args.command == "up":
        from services.up import main as up_main

        return up_main(config, config_path=args.config)  # sinks read it again for a rotated token
    if args.command == "intake":
        if not config.nats.url:
            raise SystemExit("relaydesk intake: set RELAYDESK_NATS_URL or [nats] url")
        return _run_service(runners.run_intake, config, config.nats.url, role="intake")
    if args.command == "router":
        return _run_service(runners.run_router, config, role="router")
    if args.command == "projector":
        return _run_service(runners.run_projector, config, role="projector")
    if args.command == "api":
        from services.bootstrap import api_token

        token, _ = api_token(config, None)
        return _run_service(runners.run_api, config, token, role="api")
    if args.command == "delivery":
        return _run_service(runners.run_delivery, config, role="delivery")
    if args.command == "connector":
        from connectors.sdk import ConnectorNotFound, registry
        from services.nats_permissions import connector_user

        try:  # a misspelt name says so first, not that NATS or the health port is not there
            registry.load(args.name)
        except ConnectorNotFound as err:
            raise SystemExit(f"relaydesk connector: {err}") from None
        return _run_service(runners.run_connector, config, args.name, role=connector_user(args.name))
    if args.command == "sink":
        from services.nats_permissions import sink_user
        from services.sinks import runner as sinks

        # Running, it reads its table again (this file, the environment, secret files) while the
        # helpdesk refuses its credentials: a rotated token needs no restart.
        job = sinks.retry_parked if args.retry_parked else sinks.sink_service(args.config, args.name)
        return _run_service(job, config, args.name, role=sink_user(args.name))
    if args.command == "report":
        from services.reports.command import report_command

        return report_command(
            config,
            start=args.start,
            end=args.end,
            group_by=args.group_by,
            reopen_hours=args.reopen_hours,
            tz=args.tz,
            png=args.png,
            as_json=args.json,
            api=args.api,
            token=args.token,
        )
    if args.command == "customers":
        from services.customers.command import customers_command

        return customers_command(args, config)
    if args.command == "dlq":
        from services.dlq import dlq_command

        return dlq_command(args, config)
    if args.command == "status":
        from services.status import status_command

        return status_command(args, config)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
