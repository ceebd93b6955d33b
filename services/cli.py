"""The ``relaydesk`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from services import logs
from services.cli_parser import build_parser, parse
from services.config import Config, ConfigError, load
from services.tool_runner import interrupted_as, run_tool

T = TypeVar("T")


def _config(args: argparse.Namespace) -> Config:
    try:
        config = load(args.config)
    except ConfigError as err:
        raise SystemExit("\n".join(f"relaydesk: {problem}" for problem in err.problems)) from err
    if getattr(args, "nats_url", None):
        from services.bus.auth import server_list

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
    from services.bus.connection import until_connection_lost

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
    from services.bus.permissions import cluster_auth_config, cluster_connectors
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
            # What rd_state kept for good before its keys expired by themselves.
            from services.state_sweep import sweep_state

            print(await sweep_state(bus.nc.jetstream(), datetime.now(UTC)))

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
        rebuild_command(config.nats.url, target, args.customer, message_days=config.retention.message_days),
        interrupted=f"{replaced}, the live timelines are as they were; safe to run again",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
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
        api = functools.partial(runners.run_api, config_path=args.config)  # [api.operators] taken again on a change
        return _run_service(api, config, token, role="api")
    if args.command == "delivery":
        return _run_service(runners.run_delivery, config, role="delivery")
    if args.command == "connector":
        from connectors.sdk import ConnectorNotFound, registry
        from services.bus.permissions import connector_user

        try:  # a misspelt name says so first, not that NATS or the health port is not there
            registry.load(args.name)
        except ConnectorNotFound as err:
            raise SystemExit(f"relaydesk connector: {err}") from None
        return _run_service(runners.run_connector, config, args.name, role=connector_user(args.name))
    if args.command == "sink":
        from services.bus.permissions import sink_user
        from services.sinks import runner as sinks
        from services.sinks.sdk import SinkNotFound
        from services.sinks.sdk import registry as sink_registry

        try:  # as for connectors: a misspelt name says so before NATS or the health port
            sink_registry.load(args.name)
        except SinkNotFound as err:
            raise SystemExit(f"relaydesk sink: {err}") from None

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
