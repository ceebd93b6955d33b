"""The composition root: connects to NATS and builds each service from the config.

Every process (``relaydesk up`` and each single service) is built here, so wiring lives in
one place and services never construct their own dependencies.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.model import AgentProfileUpdated, AgentStatusChanged
from events.personal import CustomerKeys, PersonalDataCipher
from events.store import Append, ConcurrencyError, EventStore
from events.streams import (
    DAY,
    SETUP_BUDGET_S,
    DriftRefused,
    SetupFailed,
    StreamSettings,
    StreamsMissing,
    ensure_streams,
    retention_max_age,
)
from services.bus.auth import NatsAuth, role_credentials
from services.bus.connection import (
    connect_nats,
    denials_from_now,
    forget,
    let_go,
)
from services.bus.permissions import TOOL
from services.bus.tool_connect import connect_tool
from services.config import Config, ConfigError, load
from services.data_dir import keep, make_data_dir, read_kept

log = structlog.get_logger(__name__)


@dataclass
class Bus:
    nc: NATS
    store: EventStore
    auth: NatsAuth = field(default_factory=NatsAuth)


def auth_for(config: Config, user: str = TOOL) -> NatsAuth:
    """How a process of role ``user`` (``intake``, ``connector-sms``, ``tool``, …) connects:
    the credentials configured (``[nats] user``, … / RELAYDESK_NATS_USER, …), else the ones
    ``relaydesk up`` generated for that role in the data dir, else none (an anonymous server)."""
    configured = NatsAuth.from_settings(config.nats)
    if configured.has_identity:
        return configured
    generated = role_credentials(config.data_dir, user)
    if generated is None:
        return configured
    return NatsAuth(
        user=generated.user,
        password=generated.password,
        tls_ca=configured.tls_ca,
        tls_cert=configured.tls_cert,
        tls_key=configured.tls_key,
    )


@contextlib.asynccontextmanager
async def connect(
    config: Config,
    url: str | None = None,
    *,
    name: str = "relaydesk",
    auth: NatsAuth | None = None,
    role: str = TOOL,
    streams_ready: bool = False,
    shrink_limits: bool = False,
) -> AsyncIterator[Bus]:
    """Connect as ``auth`` (default: ``auth_for(config, role)``), make sure the streams exist
    (only check, for a role that may not manage them; neither with ``streams_ready``, when the
    caller has just set them up on another connection), and drain the connection on the way out."""
    target = url or config.nats.url
    if not target:
        raise SystemExit("no NATS server: set RELAYDESK_NATS_URL or [nats] url, or use `relaydesk up`")
    auth = auth if auth is not None else auth_for(config, role)
    nc = await connect_nats(target, name=name, timeout=config.nats.connect_timeout, auth=auth)
    try:
        if not streams_ready:
            settings = stream_settings(config)
            # Only `relaydesk setup` lowers a limit that deletes stored messages (shrink_limits).
            await _ensure_streams_patiently(nc, settings, create=auth.may_manage_streams, shrink=shrink_limits)
        yield Bus(nc, event_store(nc, config), auth)
    finally:
        forget(nc)
        await let_go(nc)


# RD_INBOUND keeps a provider's raw message at least this long: providers retry for up to 36
# hours and its dedupe window is 48 (``[retention] raw_message_days`` has the same floor).
RAW_MESSAGE_DAYS_MIN = 3


def raw_message_days(config: Config) -> int:
    """How many days RD_INBOUND keeps the providers' raw messages: ``raw_message_days``, but
    with ``message_days`` set no longer than that (nor under ``RAW_MESSAGE_DAYS_MIN``). A raw
    message holds the customer's text in clear: with the default 14 days and ``message_days = 7``
    each text stayed readable there a week after it read ``[expired]`` everywhere else."""
    days, keep = config.retention.raw_message_days, config.retention.message_days
    return min(days, max(keep, RAW_MESSAGE_DAYS_MIN)) if keep > 0 else days


def stream_settings(config: Config) -> StreamSettings:
    """The streams as this config wants them (replicas, raw message retention)."""
    return StreamSettings(
        replicas=config.nats.replicas,
        inbound_max_age=raw_message_days(config) * DAY,
        attachments_max_age=retention_max_age(config.retention.message_days),
    )


def event_store(nc: NATS, config: Config | None = None, *, reader: str = "relaydesk") -> EventStore:
    """The event store of every service but the router: it seals personal data on append
    (``[security] encrypt_personal_data``) and opens it on every read (events.personal)."""
    js = nc.jetstream()
    sealing = config.security.encrypt_personal_data if config is not None else True
    days = config.retention.message_days if config is not None else 0
    cipher = PersonalDataCipher(CustomerKeys(js), sealing=sealing, message_days=days)
    return EventStore(nc, js, reader=reader, cipher=cipher)


# How long a starting service waits for NATS to answer its stream checks (a server restarting,
# a cluster electing a leader) before it gives up and leaves the restart to its supervisor.
STREAMS_PATIENCE_S = SETUP_BUDGET_S


async def _ensure_streams_patiently(
    nc: NATS, settings: StreamSettings, *, create: bool = True, shrink: bool = False
) -> None:
    denial = denials_from_now(nc)

    def refused(_err: BaseException) -> str:
        if not (denied := denial()):
            return ""
        return (
            f"NATS refused the stream set-up ({denied}): this role may not manage streams; "
            "run `relaydesk up` or `relaydesk setup` with the tool role first"
        )

    try:
        await ensure_streams(
            nc.jetstream(), settings, create=create, shrink=shrink, budget=STREAMS_PATIENCE_S, give_up=refused
        )
    except (StreamsMissing, DriftRefused, SetupFailed) as err:
        raise SystemExit(str(err)) from err


# The configuration one-shot tools connect with, set once by the CLI (`--config`, environment).
_tool_config: Config | None = None


def configure_tools(config: Config) -> None:
    """Tools (rebuild, customers, dlq, status) connect with ``config``'s credentials, or the
    tool role's that ``relaydesk up`` generated in its data dir."""
    global _tool_config
    _tool_config = config


def _config_for_tools() -> Config:
    if _tool_config is not None:
        return _tool_config
    try:
        return load()
    except ConfigError as err:
        raise SystemExit(f"relaydesk: {err}") from err


async def connect_for_tool(url: str, config: Config | None = None) -> NATS:
    """A connection for a one-shot command (import, rebuild): a few quick tries within three times
    ``[nats] connect_timeout``, said on stderr while NATS does not answer, and failures said once
    by the caller (``services.bus.tool_connect``). Connects as the tool role (see ``auth_for``)."""
    config = config or _config_for_tools()
    return await connect_tool(url, auth_for(config, TOOL), timeout=config.nats.connect_timeout)


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
    kept = read_kept(path, "operator token", "RELAYDESK_API_TOKEN")
    if kept is not None:
        return kept, False
    make_data_dir(data_dir)
    token = keep(path, secrets.token_urlsafe(24), "operator token")
    return token, True


SIGNING_KEY_FILE = "api-signing-key"


def api_signing_key(config: Config, data_dir: Path | None, *, generate: bool = False) -> str:
    """The key the API signs agent tokens with: configured, else the one kept 0600 in the
    data dir (``generate``: made there once, as ``relaydesk up`` does), else empty (the API
    then derives one from the operator token). Rotating it invalidates agent tokens."""
    if config.api.signing_key:
        return config.api.signing_key
    if data_dir is None:
        return ""
    path = data_dir / SIGNING_KEY_FILE
    kept = read_kept(path, "API signing key", "RELAYDESK_API_SIGNING_KEY")
    if kept is not None or not generate:
        return kept or ""
    make_data_dir(data_dir)
    # A concurrent start reads either no file or the whole key; the first to link wins.
    return keep(path, secrets.token_urlsafe(32), "API signing key")
