"""The composition root: connects to NATS and builds each service from the config.

Every process (``relaydesk up`` and each single service) is built here, so wiring lives in
one place and services never construct their own dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.model import AgentProfileUpdated, AgentStatusChanged
from events.store import Append, ConcurrencyError, EventStore
from events.streams import StreamSettings, ensure_streams
from services.config import Config
from services.nats_errors import NATS_UNAVAILABLE

log = structlog.get_logger(__name__)


@dataclass
class Bus:
    nc: NATS
    store: EventStore


@contextlib.asynccontextmanager
async def connect(config: Config, url: str | None = None, *, name: str = "relaydesk") -> AsyncIterator[Bus]:
    """Connect, make sure the streams exist, and drain the connection on the way out."""
    target = url or config.nats.url
    if not target:
        raise SystemExit("no NATS server: set RELAYDESK_NATS_URL or [nats] url, or use `relaydesk up`")
    nc = await connect_nats(target, name=name, timeout=config.nats.connect_timeout)
    try:
        await _ensure_streams_patiently(nc, StreamSettings(replicas=config.nats.replicas))
        yield Bus(nc, EventStore(nc, nc.jetstream()))
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


# How long a starting service waits for NATS to answer its stream checks (a server restarting,
# a cluster electing a leader) before it gives up and leaves the restart to its supervisor.
STREAMS_PATIENCE_S = 60.0


async def _ensure_streams_patiently(nc: NATS, settings: StreamSettings) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAMS_PATIENCE_S
    pause = 0.25
    while True:
        try:
            await ensure_streams(nc.jetstream(), settings)
            return
        except NATS_UNAVAILABLE as err:
            if loop.time() >= deadline:
                waited = f"{STREAMS_PATIENCE_S:.0f} s"
                raise SystemExit(f"NATS did not answer the stream checks for {waited}: {err!r}") from err
            log.warning("nats.not_ready", error=repr(err), retry_in_s=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


async def connect_nats(url: str, *, name: str, timeout: float = 5.0) -> NATS:
    async def error_cb(err: Exception) -> None:
        log.warning("nats.error", error=str(err))

    async def disconnected_cb() -> None:
        log.warning("nats.disconnected")

    async def reconnected_cb() -> None:
        log.info("nats.reconnected")

    # Bounded: on a first connection nats.py keeps retrying forever, deaf to SIGTERM.
    connecting = nats.connect(
        url,
        name=name,
        connect_timeout=timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
    )
    try:
        return await asyncio.wait_for(connecting, timeout * 3)
    except (TimeoutError, OSError, nats.errors.NoServersError) as err:
        raise SystemExit(f"cannot reach NATS at {url}: {str(err) or 'no answer in time'}") from err


async def connect_for_tool(url: str) -> NATS:
    """A connection for a one-shot command (import, rebuild): a few quick tries, and failures
    said once by the caller, not as one traceback per try from nats.py's default handler."""

    async def error_cb(err: Exception) -> None:
        log.debug("nats.error", error=str(err))

    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3, error_cb=error_cb)


async def seed_agents(store: EventStore, config: Config) -> int:
    """Register the configured roster once: an agent whose subject already has events is
    left alone (the log, not the config, is the truth once an operator has edited it)."""
    seeded = 0
    now = datetime.now(UTC)
    for seed in config.agents:
        subject = subjects.agent(seed.id)
        if await store.last_subject_seq(subject):
            continue
        try:
            seq = await store.append(
                Append(AgentProfileUpdated(at=now, agent_id=seed.id, profile=seed.profile(), actor="seed"), expected=0)
            )
        except ConcurrencyError:
            continue  # another process seeded it first
        status = seed.status if seed.status in ("available", "away", "offline") else "available"
        await store.append(
            Append(AgentStatusChanged(at=now, agent_id=seed.id, status=status, actor="seed"), expected=seq)  # type: ignore[arg-type]
        )
        seeded += 1
    if seeded:
        log.info("roster.seeded", agents=seeded)
    return seeded


def api_token(config: Config, data_dir: Path | None) -> tuple[str, bool]:
    """The operator token: configured, else the one generated earlier for this data dir,
    else a new one (kept 0600 in the data dir so a restart keeps it). Returns (token, new)."""
    if config.api.token:
        return config.api.token, False
    if data_dir is None:
        raise SystemExit("set RELAYDESK_API_TOKEN (the operator bearer token)")
    path = data_dir / "api-token"
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, True
