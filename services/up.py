"""``relaydesk up``: every service in one process, with an embedded nats-server unless
RELAYDESK_NATS_URL names one. Ctrl-C or SIGTERM stops everything, the server included."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from services.bootstrap import Bus, api_signing_key, api_token, connect, seed_agents
from services.bus.auth import NatsAuth, RoleCredentials
from services.bus.embedded import EmbeddedNats, NatsServerError, pick_port
from services.bus.permissions import TOOL, connector_user, sink_user
from services.config import Config
from services.data_dir import DataDirBusy, DataDirLock, DataDirUnusable, lock_data_dir
from services.health import Health, serving
from services.runners import (
    ServiceFailed,
    run_api,
    run_connector,
    run_delivery,
    run_intake,
    run_projector,
    run_router,
)
from services.supervision import Start, supervised

if TYPE_CHECKING:
    from services.sinks.sdk import SettingsSource

log = structlog.get_logger(__name__)

BUILT_IN_CONNECTORS = ("sms", "email", "social", "chat")
DEMO_WIDGET_KEY = "demo-widget-key"
# The settings ``up`` fills in where a [connectors.<name>] table leaves them out
# (``with_built_in_connectors``); a connector started on its own has no such help.
FILLED_BY_UP = {"chat": ("widget_key", "session_secret")}
SERVICES = ("intake", "router", "projector", "api", "delivery")


def enabled_connectors(config: Config, *, warn: bool = True) -> list[str]:
    """Connectors with a ``[connectors.<name>]`` table, unless it says ``enabled = false``;
    ``warn``: log the tables no installed connector takes (once per start, not per call)."""
    from connectors.sdk import registry

    known = set(registry.available())
    wanted = list(config.connectors)
    missing = [name for name in wanted if name not in known]
    if missing and warn:
        log.warning("up.connectors_unknown", connectors=missing, known=sorted(known))
    return [name for name in wanted if name in known and is_enabled(config.connectors[name].get("enabled", True))]


def is_enabled(value: object) -> bool:
    """``enabled`` as TOML writes it (a bool) or as the environment does (a string):
    false, 0, no and off (any case) disable."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    if value is None:
        return True
    return bool(value)


def with_built_in_connectors(config: Config, data_dir: Path) -> Config:
    """``relaydesk up`` runs every built-in channel. Chat needs a widget key and a session
    secret that survives restarts (visitor addresses derive from it): a demo key, and a
    secret generated once and kept in the data dir, unless the config sets them."""
    for name in BUILT_IN_CONNECTORS:
        config.connectors.setdefault(name, {})
    chat = config.connectors["chat"]
    chat.setdefault("widget_key", DEMO_WIDGET_KEY)
    if "session_secret" not in chat:
        chat["session_secret"] = _kept_secret(data_dir / "chat-session-secret")
    return config


def _kept_url(data_dir: Path) -> Path:
    return data_dir / EMBEDDED_URL_FILE


EMBEDDED_URL_FILE = "nats-url"


def embedded_url(data_dir: Path) -> str:
    """The URL of the embedded server a running `relaydesk up` with this data dir started ("" if none)."""
    path = _kept_url(data_dir)
    return path.read_text().strip() if path.exists() else ""


def _kept_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(36)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@dataclass
class Started:
    """What ``serve_all`` reports once every service listens."""

    nats_url: str
    token: str
    connector_urls: dict[str, list[str]] = field(default_factory=dict)
    # The process's /healthz, /readyz and /metrics ("" when [health] port is 0).
    health_url: str = ""


def connector_channels(names: Iterable[str]) -> dict[str, str]:
    """Connector name -> the channel it serves (its ``rd.inbound.<channel>``)."""
    from connectors.sdk import registry

    return {name: str(registry.load(name).channel) for name in names}


async def serve_all(
    config: Config,
    nats_url: str,
    token: str,
    stop: asyncio.Event,
    on_started: Callable[[Started], None] | None = None,
    services: tuple[str, ...] = SERVICES,
    credentials: RoleCredentials | None = None,
    sink_settings: Callable[[str], SettingsSource] | None = None,
    config_path: str | Path | None = None,
) -> int:
    """Run ``services`` and every enabled connector until ``stop``; a service that fails
    stops the others at once (its reason printed first). Returns an exit code.

    Each service and connector has its own NATS connection. With ``credentials`` (the users
    ``up`` generated for its embedded server) each connects as its own role, and the tool role
    sets up the streams first; without, all use ``[nats]``'s credentials (or none).
    ``sink_settings``: where each sink reads its table again while its helpdesk refuses the
    credentials (None: it keeps the table it started with). ``config_path``: the file
    ``config`` came from; the API takes a changed ``[api.operators]`` from it (None: only at a
    restart)."""
    base = NatsAuth.from_settings(config.nats)

    def auth(user: str) -> NatsAuth:
        if credentials is None:
            return base
        if user not in credentials.passwords:
            raise SystemExit(f"no NATS credentials for {user} in {credentials.directory}: restart `relaydesk up`")
        return credentials.auth(user, base)

    connectors = enabled_connectors(config)
    async with contextlib.AsyncExitStack() as stack:
        # One health server for the whole process, every service's checks on it; a free port
        # when [health] port is taken (several `up`s on one machine, tests).
        health = await stack.enter_async_context(serving(config, Health(), any_port_if_taken=True))
        for name in [*services, *(f"connector {c}" for c in connectors)]:
            health.expect(name)
        tool = await stack.enter_async_context(connect(config, nats_url, name="relaydesk-up", auth=auth(TOOL)))
        await seed_agents(tool.store, config)
        buses: dict[str, Bus] = {}
        for user in [*services, *(connector_user(name) for name in connectors)]:
            buses[user] = await stack.enter_async_context(
                connect(config, nats_url, name=f"relaydesk-{user}", auth=auth(user), streams_ready=True)
            )
        started = Started(nats_url, token)
        if health.port:
            started.health_url = f"http://{_url_host(config.health.host)}:{health.port}"
        api_ready = asyncio.Event()
        runners: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "intake": lambda: run_intake(config, buses["intake"], nats_url, stop, health=health),
            "router": lambda: run_router(config, buses["router"], stop, health=health),
            "projector": lambda: run_projector(config, buses["projector"], stop, health=health),
            "api": lambda: run_api(
                config, buses["api"], token, stop, api_ready, health=health, config_path=config_path
            ),
            "delivery": lambda: run_delivery(config, buses["delivery"], stop, health=health),
        }
        jobs: dict[str, Start] = {name: runners[name] for name in services}
        if "api" not in services:
            api_ready.set()
        for name in connectors:
            started.connector_urls[name] = []
            bus = buses[connector_user(name)]
            jobs[f"connector {name}"] = _connector_job(config, bus, name, stop, started, health)
        from services.sinks.runner import enabled_sinks, run_sink

        for name in enabled_sinks(config):  # [sinks.<name>] tables, each as its own sink-<name> role
            sink_bus = await stack.enter_async_context(
                connect(config, nats_url, name=f"relaydesk-sink-{name}", auth=auth(sink_user(name)), streams_ready=True)
            )
            source = sink_settings(name) if sink_settings is not None else None
            jobs[f"sink {name}"] = functools.partial(
                run_sink, config, sink_bus, name, stop, health=health, settings=source
            )
        tasks = {
            asyncio.create_task(supervised(name, job, stop, health), name=name): name for name, job in jobs.items()
        }
        failures = _Failures(tasks)
        ready_wait = asyncio.create_task(api_ready.wait())
        stop_wait = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([ready_wait, stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if not failures.report(done) and ready_wait in done:
                for _ in range(100):  # connectors report where they listen right after binding
                    if all(started.connector_urls.values()) or any(task.done() for task in tasks):
                        break
                    await asyncio.sleep(0.02)
                if not failures.report(task for task in tasks if task.done()) and on_started is not None:
                    on_started(started)
            if not stop.is_set() and not any(task.done() for task in tasks):
                done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
                failures.report(done)
        finally:
            stop.set()
            ready_wait.cancel()
            stop_wait.cancel()
            await _stop_all(tasks)
        failures.report(tasks)
        return 1 if failures.seen else 0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"  # listening everywhere: reachable here on loopback
    return f"[{host}]" if ":" in host else host


# How long the other services get to stop by themselves once one has failed or stop is set;
# then they are cancelled.
STOP_GRACE_SECONDS = 3.0


def _connector_job(config: Config, bus: Bus, name: str, stop: asyncio.Event, started: Started, health: Health) -> Start:
    async def start() -> None:
        urls = started.connector_urls[name]
        urls.clear()  # started again (services.supervision): where it listens now
        await run_connector(config, bus, name, stop, urls, health=health)

    return start


async def _stop_all(tasks: dict[asyncio.Task[None], str]) -> None:
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
    if pending:
        log.warning("up.cancelling", services=sorted(tasks[t] for t in pending), after_seconds=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        if pending:
            log.error("up.not_stopping", services=sorted(tasks[t] for t in pending))


class _Failures:
    """Say each failed service's reason once, the moment it is known."""

    def __init__(self, tasks: dict[asyncio.Task[None], str]) -> None:
        self.tasks = tasks
        self.seen: set[asyncio.Task[None]] = set()

    def report(self, done: Iterable[asyncio.Future[Any]]) -> bool:
        """Report the failures among ``done``; True if any service has failed so far."""
        for task in done:
            if task not in self.tasks or task in self.seen or not task.done() or task.cancelled():
                continue
            err = task.exception()
            if err is None:
                continue
            self.seen.add(task)
            name = self.tasks[task]
            message = str(err) if isinstance(err, ServiceFailed) else repr(err)
            log.error("up.service_failed", service=name, error=message)
            print(f"relaydesk: {name} failed: {message}", file=sys.stderr, flush=True)
        return bool(self.seen)


async def up(config: Config, lock: DataDirLock, config_path: str | Path | None = None) -> int:
    """Everything, until Ctrl-C or SIGTERM, holding the data dir's ``lock``
    (services.data_dir): the files it writes there are its own until it exits, and the
    embedded nats-server holds the lock with it."""
    embedded: EmbeddedNats | None = None
    url_file: Path | None = None  # written by this process (then removed by it)
    config = with_built_in_connectors(config, config.data_dir)
    nats_url = config.nats.url
    credentials: RoleCredentials | None = None
    try:
        # Before anything starts: a token file that cannot serve stops `up` with the reason.
        token, new_token = api_token(config, config.data_dir)
        # Agent tokens are signed with it (services.api.tokens); made once, kept 0600.
        api_signing_key(config, config.data_dir, generate=True)
        if not nats_url:
            # Security on by default: a user per role, generated once and kept in the data dir.
            from services.sinks.runner import enabled_sinks

            connectors = connector_channels(enabled_connectors(config, warn=False))  # serve_all warns
            credentials = RoleCredentials.ensure(config.data_dir, connectors, enabled_sinks(config))
            port = pick_port("127.0.0.1", config.nats.port)
            embedded = EmbeddedNats(
                store_dir=config.data_dir / "nats",
                port=port,
                config_file=credentials.write_server_config(),
                pass_fds=(lock.fileno(),),
            )
            nats_url = await embedded.astart()
            # Where the tools (`relaydesk status`, `dlq`, `customers`, `rebuild`) find this server.
            url_file = _kept_url(config.data_dir)
            url_file.write_text(nats_url + "\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def banner(started: Started) -> None:
            print_banner(config, started, embedded is not None, new_token)

        from services.sinks.runner import config_settings

        sinks = config_settings(config_path)  # each sink reads the file again for a rotated token
        return await serve_all(
            config, nats_url, token, stop, banner, credentials=credentials, sink_settings=sinks, config_path=config_path
        )
    finally:
        if embedded is not None:
            await embedded.astop()
        if url_file is not None:
            url_file.unlink(missing_ok=True)
        print("relaydesk: stopped", file=sys.stderr)


def print_banner(config: Config, started: Started, embedded: bool, new_token: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title="Relaydesk is up", show_header=True, header_style="bold")
    table.add_column("service")
    # fold, not rich's default ellipsis: off a terminal (80 columns, `make run > log`) a data dir
    # or the NATS passwords' folder ended in "…", which an operator cannot open.
    table.add_column("where", overflow="fold")
    table.add_row("NATS" + (" (embedded)" if embedded else ""), started.nats_url)
    if embedded:
        table.add_row("data dir", str(config.data_dir.resolve()))
        credentials = config.data_dir.resolve() / "nats-credentials"
        table.add_row("NATS users", f"one per role, anonymous refused; passwords in {credentials}")
    table.add_row("API", f"http://{config.api.host}:{config.api.port}  (GET /healthz, /v1/...)")
    table.add_row("agent console", f"http://{config.api.host}:{config.api.port}/console")
    for name, urls in started.connector_urls.items():
        table.add_row(f"connector {name}", ", ".join(urls) or "starting…")
    table.add_row("intake, router, projector, delivery", "running")
    if started.health_url:
        table.add_row("health, metrics", f"{started.health_url}  (GET /healthz, /readyz, /metrics)")
    console.print(table)
    api = f"http://{config.api.host}:{config.api.port}"
    # The token is shown once, when this start generated it; a terminal log must not hand out
    # the operator's key on every start.
    if new_token:
        console.print(f"Operator token (generated, kept in the data dir): [bold]{started.token}[/bold]")
        # soft_wrap: a narrow terminal wraps the command itself, no newline in it to break a paste
        console.print(f"Try: curl -s -H 'Authorization: Bearer {started.token}' {api}/v1/agents", soft_wrap=True)
    else:
        where = "RELAYDESK_API_TOKEN / config" if config.api.token else str(config.data_dir / "api-token")
        # soft_wrap: a long data dir path stays one piece to copy (it was folded mid-name)
        console.print(f"Operator token: the one in {where} (not shown again)", soft_wrap=True)
        console.print(f'Try: curl -s -H "Authorization: Bearer $TOKEN" {api}/v1/agents', soft_wrap=True)
    console.print("Ctrl-C stops everything.")


def main(config: Config, config_path: str | Path | None = None) -> int:
    """``relaydesk up``: refused at once, touching nothing, while another holds the data dir."""
    try:
        lock = lock_data_dir(config.data_dir)
    except (DataDirBusy, DataDirUnusable) as err:
        raise SystemExit(f"relaydesk: {err}") from None
    with lock, contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(up(config, lock, config_path))
        except (NatsServerError, DataDirUnusable) as err:  # the embedded server's log says why; a file in the way
            raise SystemExit(f"relaydesk: {err}") from None
    return 0
