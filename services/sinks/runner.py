"""``relaydesk sink NAME`` and the sinks ``relaydesk up`` runs: one configured sink, until stopped.

A sink connects as its own NATS role ``sink-<name>`` (services/nats_permissions.py): it reads
the log, appends replies and resolutions on conversation subjects, queues replies on
``rd.out.<channel>``, keeps its own bucket ``rd_sink_<name>`` and its lease key ``sink.<name>``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from services.bootstrap import Bus
from services.config import Config
from services.health import Health
from services.health.checks import service_check
from services.runners import ServiceFailed

from .sdk import Sink, SinkConfigError, SinkError, SinkNotFound, SinkRuntime, registry

log = structlog.get_logger(__name__)


def enabled_sinks(config: Config) -> list[str]:
    """Sinks with a ``[sinks.<name>]`` table, unless it says ``enabled = false``."""
    from services.up import is_enabled

    tables = config.sinks.items()
    return [name for name, table in tables if not isinstance(table, dict) or is_enabled(table.get("enabled"))]


def build_sink(config: Config, name: str) -> Sink:
    """The sink ``name`` from its ``[sinks.<name>]`` table, or ``ServiceFailed`` saying why not."""
    try:
        sink_cls = registry.load(name)
        # Its bucket follows [nats] replicas unless its table says.
        return sink_cls.from_config({"replicas": config.nats.replicas, **config.sinks.get(name, {})})
    except (SinkNotFound, SinkConfigError) as err:
        raise ServiceFailed(f"sink {name}: {err}") from err


async def run_sink(
    config: Config,
    bus: Bus,
    name: str,
    stop: asyncio.Event,
    started: list[str] | None = None,
    *,
    health: Health | None = None,
) -> None:
    runtime = SinkRuntime(build_sink(config, name), bus.nc, bus.store)
    try:
        urls = await runtime.start()
    except SinkError as err:  # cannot listen
        raise ServiceFailed(err.reason) from err
    if started is not None:
        started.extend(urls)
    if health is not None:
        health.add(f"sink {name}", service_check(bus.nc, runtime.health))
    try:
        await stop.wait()
    finally:
        await runtime.stop()


async def retry_parked(config: Config, bus: Bus, name: str, stop: asyncio.Event, **_: Any) -> None:
    """``relaydesk sink NAME --retry-parked``: hand every parked event to the sink again, once."""
    runtime = SinkRuntime(build_sink(config, name), bus.nc, bus.store)
    await runtime.attach()
    try:
        synced, still = await runtime.retry_parked()
    finally:
        await runtime.close()
    print(f"sink {name}: {synced} parked event(s) synced, {still} still parked")
