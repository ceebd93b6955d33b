"""One coroutine per service: each runs until ``stop`` is set, then shuts down cleanly.
``relaydesk up`` runs them all in one process; ``relaydesk <service>`` runs one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web
from nats.js.kv import KeyValue

from connectors.sdk import runtime as connector_runtime
from connectors.sdk.signatures import secret_list
from events import subjects
from events.streams import SetupFailed, patiently
from services.api import operators
from services.api.app import ApiDeps, build_app
from services.api.health import health_check as api_health_check
from services.api.operators import OperatorTable
from services.api.operators_reload import follow_operators
from services.api.readiness import until_caught_up
from services.api.readmodel import LiveState
from services.api.registry import Registry, channel_connectors, known_channels, notice_channels
from services.api.uploads import run_upload_sweep
from services.bootstrap import Bus, api_signing_key
from services.bus.connection import ServiceFailed, denials_from_now
from services.bus.errors import NATS_UNAVAILABLE
from services.config import Config
from services.data_dir import make_data_dir
from services.dlq import export_parked
from services.health import Health, HealthPortTaken, serving
from services.health.checks import intake_check, projector_check, service_check
from services.identity import IdentityDirectory
from services.identity.addresses import IdentityRules
from services.intake import Intake
from services.intake.settling import prepare as prepare_intake_consumer
from services.intake.worker import IntakeWorker
from services.metrics import http_metrics
from services.projector import Projector
from services.projector_claim import ProjectorClaim
from services.retention import run_retention, run_timelines_retention
from services.router_runner import RouterRunner
from services.timelines import TimelineStore, open_store

log = structlog.get_logger(__name__)

T = TypeVar("T")


async def _patiently(op: Callable[[], Awaitable[T]], *, what: str, bus: Bus) -> T:
    """A start-up call that waits out a busy NATS (events.streams.patiently), failing the
    service with the reason after the budget rather than at the first timeout, and at once
    when NATS refused it a permission (that looks like a timeout: found by an audit, a
    service started as the wrong user waited 60 s and then blamed NATS for not answering)."""
    denial = denials_from_now(bus.nc)

    def refused(_err: BaseException) -> str:
        if not (denied := denial()):
            return ""
        return f"NATS refused it ({denied}) for {bus.auth.describe()}: is this the service's own NATS user?"

    try:
        return await patiently(op, what=what, give_up=refused)
    except SetupFailed as err:
        raise ServiceFailed(str(err)) from err


async def _identity_bucket(bus: Bus) -> KeyValue:
    js = bus.nc.jetstream()
    return await _patiently(
        lambda: js.key_value(subjects.IDENTITY_BUCKET), what=f"KV bucket {subjects.IDENTITY_BUCKET}", bus=bus
    )


@contextlib.asynccontextmanager
async def standalone_health(config: Config) -> AsyncIterator[Health]:
    """The health server of a process running one service (``relaydesk router`` …): on
    ``[health] port`` or not at all; a port taken is a ``ServiceFailed`` naming it."""
    health = Health()
    try:
        async with serving(config, health, any_port_if_taken=False):
            yield health
    except HealthPortTaken as err:
        raise ServiceFailed(str(err)) from err


async def run_intake(
    config: Config, bus: Bus, nats_url: str, stop: asyncio.Event, *, health: Health | None = None
) -> None:
    directory = IdentityDirectory(await _identity_bucket(bus), IdentityRules.from_settings(config.intake))
    # A raw pull consumer on the bus's connection (it reconnects for as long as it takes,
    # with the intake role's credentials): fetch(batch), many messages in flight, no thread
    # hop per message (services/intake/worker.py). ``nats_url`` is kept for the signature.
    # ``[intake] workers`` (default 4) sets how many messages are in flight: 128 each.
    in_flight = max(64, config.intake.workers * 128)
    intake = Intake(bus.store, directory, config.intake)
    worker = IntakeWorker(bus.nc, intake, in_flight=in_flight)
    # Bounded redelivery and [intake] ack_wait_seconds: an older version's durable is updated in place.
    redelivery = worker.redelivery
    watch = await _patiently(
        lambda: prepare_intake_consumer(bus.nc, redelivery), what="intake's durable consumer", bus=bus
    )
    if health is not None:
        health.add("intake", intake_check(bus.nc, lambda: (intake.failing_since, intake.last_failure)))
    try:
        log.info("intake.started")
        await worker.run(stop)
    except NATS_UNAVAILABLE as err:
        if not stop.is_set():
            raise
        log.warning("intake.stopped_without_nats", error=repr(err))
    finally:
        await watch.stop()
    log.info("intake.stopped")


async def run_router(
    config: Config, bus: Bus, stop: asyncio.Event, *, health: Health | None = None, **options: Any
) -> None:
    settings = {
        "lease_ttl": config.runner.lease_seconds,
        "tick": config.runner.tick_seconds,
        "snapshot_every": config.runner.snapshot_every,
        "instance_id": config.runner.instance_id or None,
    }
    runner = RouterRunner(bus.nc, config.router, **{**settings, **options})
    if health is not None:

        def detail() -> dict[str, Any]:
            role = "leader" if runner.leading.is_set() else "standby"
            return {"role": role, "instance": runner.instance_id, "caught_up": runner.ready.is_set()}

        health.add("router", service_check(bus.nc, detail))
    await runner.run(stop)


async def _open_projection(config: Config, *, readonly: bool, service: str) -> TimelineStore:
    """The timelines store, or ``ServiceFailed`` with the reason in one line (a DSN's
    password masked): a wrong DSN or a database down is a failed start, not a traceback."""
    try:
        if not config.projection.dsn:
            make_data_dir(config.data_dir)  # SQLite in the data dir
        return await open_store(config.projection_target, readonly=readonly)
    except Exception as err:
        from services.bus.auth import redact_url

        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        target = redact_url(config.projection_target)
        raise ServiceFailed(f"{service} cannot open the projection store {target}: {reason}") from err


async def run_projector(config: Config, bus: Bus, stop: asyncio.Event, *, health: Health | None = None) -> None:
    timelines = await _open_projection(config, readonly=False, service="projector")
    claim: ProjectorClaim | None = None
    try:
        partition = config.projection.partition_pair()
        projector = Projector(bus.store, timelines, batch_size=config.projection.batch_size, partition=partition)
        # One projector per partition of the store; a second stands by (services/projector_claim.py).
        claim = ProjectorClaim(config.projection_target, projector.key)
        if not await claim.take(stop):
            return
        if health is not None:
            check = projector_check(
                bus.store,
                lambda: projector.position,
                projector.key,
                projector.filter_subject,
                stale_after=config.projection.stale_seconds,
                rebuilding=lambda: projector.rebuilding,
                erasures_undone=lambda: projector.erasures.count,
                last_error=lambda: projector.last_error,
            )
            health.add("projector", check)
        # [retention] message_days: the timelines' copies of message bodies expire too.
        days = config.retention.message_days
        retention = asyncio.create_task(run_timelines_retention(timelines, days, stop)) if days > 0 else None
        try:
            await projector.run(stop)
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
    finally:
        if claim is not None:
            await claim.release()
        await timelines.close()


async def run_api(
    config: Config,
    bus: Bus,
    token: str,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    health: Health | None = None,
    config_path: str | Path | None = None,
) -> None:
    """Listens at once (a port taken is reported before anything is read); answers 503 on
    what needs the view until the view has caught up with the log (``/readyz`` says so);
    ``ready`` is set once it has. ``config_path``: the file ``config`` was read from, whose
    ``[api.operators]`` is taken again when it changes (``services.api.operators_reload``)."""
    if (shared := operators.shared_token_named(token, config.api.operators)) is not None:
        # It would act as plain "operator": the name would never be on what it does.
        why = f"[api.operators] {shared}: that is the shared [api] token; give {shared} a token of their own"
        raise ServiceFailed(why)
    live = LiveState(bus.store)
    rules = IdentityRules.from_settings(config.intake, channels=known_channels(config))
    # Before the store is opened: a NATS answer that does not come here leaves nothing open
    # (``relaydesk up`` starts the API again then: services.supervision).
    directory = IdentityDirectory(await _identity_bucket(bus), rules)
    # A store it cannot open fails the start: serving without timelines while /readyz says
    # ready hid a wrong DSN or a database that is down.
    timelines = await _open_projection(config, readonly=True, service="API")
    deps = ApiDeps(
        nc=bus.nc,
        store=bus.store,
        live=live,
        timelines=timelines,
        directory=directory,
        token=token,
        policy=config.router,
        reply_requeue_after=config.api.reply_requeue_seconds,
        view_stale_after=config.api.view_stale_seconds,
        signing_key=api_signing_key(config, config.data_dir),
        extra_signing_keys=tuple(secret_list(config.api.extra_signing_keys)),
        operators=OperatorTable(config.api.operators),
        replicas=config.nats.replicas,
        message_days=config.retention.message_days,
        slack=config.slack,
        console=config.console,
        connectors=config.connectors,
        channel_connectors=channel_connectors(config),
        registry=Registry.from_config(config),
        templates=config.templates,
        public_url=config.api.public_url or f"http://{config.api.host}:{config.api.port}",
        notice_channels=notice_channels(),
    )
    app = build_app(deps)
    app.middlewares.insert(0, until_caught_up(live))
    app.middlewares.insert(0, http_metrics("api"))  # outermost: 503s while catching up are timed too
    # Idle connections closed as on the connectors' ports (a held one is a descriptor a client
    # keeps at will); the event stream and requests being served are not idle. A stop waits 10 s
    # for requests under way (aiohttp's default, 60 s, outlasted the runtime's 30 s grace: the
    # SIGKILL then cut the view's and the stores' own stop short).
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=connector_runtime.IDLE_CONNECTION_TIMEOUT, shutdown_timeout=10.0
    )
    await runner.setup()
    site = web.TCPSite(runner, config.api.host, config.api.port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        if timelines is not None:
            await timelines.close()
        raise ServiceFailed(
            f"API cannot listen on {config.api.host}:{config.api.port}: {err.strerror}"
            " (choose another port: [api] port, RELAYDESK_API_PORT, or relaydesk up --api-port N)"
        ) from err
    log.info("api.listening", url=f"http://{config.api.host}:{config.api.port}")
    if health is not None:
        health.add("api", api_health_check(deps))  # what GET /readyz of the API says
    retention: asyncio.Task[None] | None = None
    upload_sweep: asyncio.Task[None] | None = None
    parked: asyncio.Task[None] | None = None
    operator_table: asyncio.Task[None] | None = None
    if config_path is not None:
        operator_table = asyncio.create_task(follow_operators(Path(config_path), deps.operators, token, stop))
    try:
        await live.begin()  # after build_app: its folds (agent tokens) must see the whole log
        caught_up = asyncio.create_task(live.caught_up.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([caught_up, stopping], return_when=asyncio.FIRST_COMPLETED)
        caught_up.cancel()
        stopping.cancel()
        if live.caught_up.is_set():
            log.info("api.started", url=f"http://{config.api.host}:{config.api.port}", position=live.position)
            if ready is not None:
                ready.set()
        # [retention] message_days: erase day keys past retention (services/retention.py).
        if config.retention.message_days > 0:
            retention = asyncio.create_task(run_retention(bus.nc.jetstream(), config.retention.message_days, stop))
        # Uploads no reply named within a day are erased (services/api/uploads.py).
        upload_sweep = asyncio.create_task(run_upload_sweep(bus.nc.jetstream(), stop))
        # relaydesk_parked_messages: what is parked now, exported by the API alone (services/dlq.py).
        parked = asyncio.create_task(export_parked(bus.nc, stop))
        await stop.wait()
    finally:
        if retention is not None:
            await retention
        if upload_sweep is not None:
            await upload_sweep
        if parked is not None:
            await parked
        if operator_table is not None:
            operator_table.cancel()  # (stop is not set when the start failed)
            with contextlib.suppress(asyncio.CancelledError):
                await operator_table
        await runner.cleanup()
        await live.stop()
        if timelines is not None:
            await timelines.close()
        log.info("api.stopped")


async def run_connector(
    config: Config,
    bus: Bus,
    name: str,
    stop: asyncio.Event,
    started: list[str] | None = None,
    *,
    health: Health | None = None,
) -> None:
    from connectors.sdk import registry
    from connectors.sdk.errors import ConnectorConfigError
    from connectors.sdk.runtime import ConnectorRuntime

    try:
        connector_cls = registry.load(name)
        # The streams and buckets a connector creates follow [nats] replicas, and what it keeps
        # of message text [retention] message_days, unless its table says.
        raw = {
            "replicas": config.nats.replicas,
            "message_days": config.retention.message_days,
            **config.connectors.get(name, {}),
        }
        connector = connector_cls.from_config(raw)
    except (registry.ConnectorNotFound, ConnectorConfigError) as err:
        raise ServiceFailed(f"connector {name}: {err}") from err
    runtime = ConnectorRuntime(connector, bus.nc)
    try:
        urls = await runtime.start()
    except SystemExit as err:  # the SDK's "cannot listen on …"
        raise ServiceFailed(str(err)) from err
    smtp = getattr(connector, "smtp_address", None)  # the email connector listens for SMTP too
    if isinstance(smtp, tuple) and len(smtp) >= 2:
        host = f"[{smtp[0]}]" if ":" in str(smtp[0]) else smtp[0]
        urls = [*urls, f"smtp://{host}:{smtp[1]}"]
    if started is not None:
        started.extend(urls)
    if health is not None:
        health.add(f"connector {name}", service_check(bus.nc, lambda: {"urls": urls}))
    try:
        await stop.wait()
    finally:
        await runtime.stop()  # it logs connector.stopped


async def run_delivery(config: Config, bus: Bus, stop: asyncio.Event, *, health: Health | None = None) -> None:
    from services.delivery.service import DeliveryService

    api_url = f"http://{config.api.host}:{config.api.port}"
    service = DeliveryService(
        bus.store,
        config.delivery,
        console_url=config.delivery.console_url or f"{api_url}/console",
        api_url=api_url,
        replicas=config.nats.replicas,
        slack=config.slack,
        message_days=config.retention.message_days,
    )
    if health is not None:
        health.add(
            "delivery",
            service_check(
                bus.nc,
                lambda: {
                    "role": service.role,
                    "instance": service.instance_id,
                    "checkpoint": service.checkpoint,  # the last log sequence turned into notices
                    "started_from_snapshot": service.snapshots.started_from,  # 0: folded the whole log
                },
            ),
        )
    await service.run(stop)
