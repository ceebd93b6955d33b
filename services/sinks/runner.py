"""``relaydesk sink NAME`` and the sinks ``relaydesk up`` runs: one configured sink, until stopped.

A sink connects as its own NATS role ``sink-<name>`` (services/bus/permissions.py): it reads
the log, appends replies and resolutions on conversation subjects, queues replies on
``rd.out.<channel>``, keeps its own bucket ``rd_sink_<name>`` and its lease key ``sink.<name>``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from services.bootstrap import Bus
from services.config import Config, check
from services.health import Health
from services.health.checks import service_check
from services.runners import ServiceFailed

from .sdk import (
    SettingsSource,
    SettingsUnavailable,
    Sink,
    SinkConfigError,
    SinkError,
    SinkNotFound,
    SinkRuntime,
    registry,
)

log = structlog.get_logger(__name__)


def enabled_sinks(config: Config) -> list[str]:
    """Sinks with a ``[sinks.<name>]`` table, unless it says ``enabled = false``."""
    from services.up import is_enabled

    tables = config.sinks.items()
    return [name for name, table in tables if not isinstance(table, dict) or is_enabled(table.get("enabled"))]


def sink_table(config: Config, name: str) -> dict[str, Any]:
    """The raw ``[sinks.<name>]`` table a sink is built from: its bucket follows ``[nats]
    replicas`` unless the table says."""
    return {"replicas": config.nats.replicas, **config.sinks.get(name, {})}


def build_sink(config: Config, name: str) -> Sink:
    """The sink ``name`` from its ``[sinks.<name>]`` table, or ``ServiceFailed`` saying why not."""
    try:
        return registry.load(name).from_config(sink_table(config, name))
    except (SinkNotFound, SinkConfigError) as err:
        raise ServiceFailed(f"sink {name}: {err}") from err


class ConfigSettings(SettingsSource):
    """A sink's table read again from where the process read it at start: the config file
    ``path`` (None: none), then the environment (``env``, default ``os.environ`` as it is
    then) with its ``RELAYDESK_<NAME>_FILE`` secret files read again, all checked as
    ``relaydesk`` checks them at start. What ``relaydesk sink NAME`` and ``relaydesk up``
    give a sink's runtime, so a rotated token is picked up without a restart."""

    def __init__(self, name: str, path: str | Path | None, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.path = path
        self.env = env

    def __call__(self) -> dict[str, Any]:
        config, problems = check(self.path, self.env)
        if config is None or problems:
            # The problems name keys, variables and files, never their values.
            raise SettingsUnavailable("; ".join(problems) or "the configuration cannot be read")
        if self.name not in config.sinks:
            raise SettingsUnavailable(f"[sinks.{self.name}] is no longer configured")
        return sink_table(config, self.name)


def config_settings(path: str | Path | None) -> Callable[[str], SettingsSource]:
    """For ``relaydesk up``: each sink's ``ConfigSettings`` over the config file ``path``."""
    return functools.partial(ConfigSettings, path=path)


def sink_service(path: str | Path | None, name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """``relaydesk sink NAME``: ``run_sink`` re-reading the config file ``path`` and the
    environment while the helpdesk refuses the credentials."""
    return functools.partial(run_sink, settings=ConfigSettings(name, path))


async def run_sink(
    config: Config,
    bus: Bus,
    name: str,
    stop: asyncio.Event,
    started: list[str] | None = None,
    *,
    health: Health | None = None,
    settings: SettingsSource | None = None,
) -> None:
    """Run the sink ``name`` until ``stop``. ``settings``: where its table is read again while
    the helpdesk refuses its credentials (None: it keeps the table it started with)."""
    runtime = SinkRuntime(build_sink(config, name), bus.nc, bus.store, settings=settings)
    try:
        urls = await runtime.start()
    except SinkError as err:  # cannot listen
        raise ServiceFailed(err.reason) from err
    if started is not None:
        started.extend(urls)
    if health is not None:
        health.add(f"sink {name}", service_check(bus.nc, runtime.health, ready=functools.partial(_not_ready, runtime)))
    try:
        await stop.wait()
    finally:
        await runtime.stop()


def _not_ready(runtime: SinkRuntime) -> str | None:
    """The health port's readiness (what Kubernetes and ``relaydesk up``'s ``/readyz`` read)
    says what the sink's own ``/readyz`` says: not ready while the helpdesk refuses its
    credentials (found by a docs audit: the health port stayed ready, ``auth_failed: true`` in
    its detail, so the probe never saw the refusal the sink README promises)."""
    if runtime.auth_failed or runtime.webhook_auth_failed:
        return "the helpdesk refuses the sink's credentials"
    return None


async def retry_parked(config: Config, bus: Bus, name: str, stop: asyncio.Event, **_: Any) -> None:
    """``relaydesk sink NAME --retry-parked``: hand every parked event to the sink again, once."""
    runtime = SinkRuntime(build_sink(config, name), bus.nc, bus.store)
    await runtime.attach()
    try:
        synced, still = await runtime.retry_parked()
    finally:
        await runtime.close()
    print(f"sink {name}: {synced} parked event(s) synced, {still} still parked")
