"""Relaydesk configuration: a TOML file, then RELAYDESK_* environment overrides.

Every service takes the same file (``--config``). An override names a table and a key:
``RELAYDESK_API_PORT=9000`` sets ``[api] port``. A few well-known secrets have short names
(``RELAYDESK_NATS_URL``, ``RELAYDESK_API_TOKEN``, ``RELAYDESK_TWILIO_AUTH_TOKEN``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from events.model import AgentProfile
from router.policy import RouterPolicy
from services.delivery.settings import DeliverySettings


class ConfigError(ValueError):
    pass


class NatsSettings(msgspec.Struct, kw_only=True):
    url: str = ""  # empty: `relaydesk up` starts an embedded server
    port: int = 4222  # the embedded server's preferred port; another if taken
    replicas: int = 1
    connect_timeout: float = 5.0
    # Credentials (services/nats_auth.py). Empty: the role's credentials that `relaydesk up`
    # generated in the data dir, if any, else anonymous. RELAYDESK_NATS_USER, … set them.
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""  # a .creds file (JWT + nkey seed; needs the nkeys package)
    nkey_seed: str = ""  # a file holding an nkey seed (needs the nkeys package)
    tls_ca: str = ""  # CA bundle to verify the server (a tls:// URL, or any of these, turns TLS on)
    tls_cert: str = ""  # client certificate, when the server verifies clients
    tls_key: str = ""


class SecuritySettings(msgspec.Struct, kw_only=True):
    # Seal personal data in the log with a per-customer key (events.personal), so that
    # erasing a customer destroys the key. Off: written in clear; sealed data still reads.
    encrypt_personal_data: bool = True


class RetentionSettings(msgspec.Struct, kw_only=True):
    # Message bodies older than this many days become unreadable (their day keys are
    # destroyed by a sweep); 0 keeps them.
    message_days: int = 0


class HealthSettings(msgspec.Struct, kw_only=True):
    # Every service process serves /healthz, /readyz and /metrics here (services/health/).
    # The image sets host 0.0.0.0. `relaydesk up` takes another free port when this one is
    # taken; a single service fails at start instead. 0: no health listener.
    host: str = "127.0.0.1"
    port: int = 9090


class TracingSettings(msgspec.Struct, kw_only=True):
    # OpenTelemetry (services/tracing.py): off by default. On, a trace id set by the
    # connector travels in NATS headers through intake, router and delivery and is on
    # every log line of that message; spans go to the OTLP endpoint when one is set.
    enabled: bool = False
    otlp_endpoint: str = ""  # e.g. http://otel-collector:4318/v1/traces (OTLP over HTTP)
    service_name: str = "relaydesk"
    sample_ratio: float = 1.0


class DataSettings(msgspec.Struct, kw_only=True):
    dir: str = ".relaydesk"


class ApiSettings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    # A reply still without MessageSent / DeliveryFailed after this long is queued for its
    # connector again (deduplicated by reply id): the outbox half of the reply command.
    reply_requeue_seconds: float = 30.0
    # The key the API signs agent tokens with (services.api.tokens): empty, the one `up`
    # generated into <data dir>/api-signing-key, else one derived from the operator token.
    # Rotating it invalidates every agent token issued before.
    signing_key: str = ""


class ProjectionSettings(msgspec.Struct, kw_only=True):
    # Empty: SQLite at <data dir>/timelines.db. Or postgresql://user@host/db.
    dsn: str = ""
    batch_size: int = 500
    # "I/N": one of N projectors sharing the work by customer (each keeps its own checkpoint).
    partition: str = "0/1"

    def partition_pair(self) -> tuple[int, int]:
        index, _, count = self.partition.partition("/")
        try:
            i, n = int(index), int(count)
        except ValueError as err:
            raise ConfigError(f"[projection] partition must look like 0/2, not {self.partition!r}") from err
        if not 0 <= i < n:
            raise ConfigError(f"[projection] partition {self.partition!r}: need 0 <= I < N")
        return i, n


class RunnerSettings(msgspec.Struct, kw_only=True):
    """How the router process runs (not what it decides: that is [router])."""

    # A standby takes over this long after the active router stops renewing its lease.
    lease_seconds: float = 5.0
    # Timers (offer expiry, escalation waits) are checked at least this often.
    tick_seconds: float = 0.2
    # A snapshot of routing state every this many events, so restarts stay fast.
    snapshot_every: int = 5_000
    # Name of this router instance in the lease (empty: router-<random>).
    instance_id: str = ""


class RoutingRule(msgspec.Struct, kw_only=True):
    pattern: str = ""  # regex searched in the message text (case-insensitive)
    recipients: tuple[str, ...] = ()  # globs on the address written to, e.g. "billing@*"
    skills: dict[str, int] = {}
    priority: int = 0
    channels: tuple[str, ...] = ()


class IntakeSettings(msgspec.Struct, kw_only=True):
    workers: int = 4
    languages: tuple[str, ...] = ("en", "es", "fr", "de", "pt", "it")
    default_language: str = "en"
    default_skills: dict[str, int] = msgspec.field(default_factory=lambda: {"general": 1})
    default_region: str = "US"
    # Provider-specific email rules, only for the domains listed (services.identity.IdentityRules):
    # e.g. email_ignore_dots = ["gmail.com"], email_strip_plus = ["gmail.com"],
    # email_domain_aliases = { "googlemail.com" = "gmail.com" }.
    email_ignore_dots: tuple[str, ...] = ()
    email_strip_plus: tuple[str, ...] = ()
    email_domain_aliases: dict[str, str] = {}
    rules: tuple[RoutingRule, ...] = (
        RoutingRule(pattern=r"refund|invoice|charge|billing|payment|reembolso|factura|cobro", skills={"billing": 1}),
        RoutingRule(pattern=r"error|crash|bug|outage|login|password|contraseña", skills={"technical": 1}),
    )


class AgentSeed(msgspec.Struct, kw_only=True):
    id: str
    name: str = ""
    skills: dict[str, int] = {}
    languages: dict[str, int] = {}
    tier: int = 1
    capacity: dict[str, int] = {}
    max_total: int | None = None
    status: str = "available"

    def profile(self) -> AgentProfile:
        base = AgentProfile()
        return AgentProfile(
            name=self.name or self.id,
            skills=dict(self.skills),
            languages=dict(self.languages),
            tier=self.tier,
            capacity={**base.capacity, **self.capacity},
            max_total=self.max_total,
        )


DEMO_ROSTER: tuple[AgentSeed, ...] = (
    AgentSeed(id="ava", name="Ava (billing, EN)", skills={"billing": 3, "general": 3}, languages={"en": 5}, tier=1),
    AgentSeed(
        id="bruno",
        name="Bruno (billing, ES)",
        skills={"billing": 3, "general": 3},
        languages={"es": 5, "en": 3},
        tier=1,
    ),
    AgentSeed(
        id="chen",
        name="Chen (technical specialist, EN)",
        skills={"technical": 5, "billing": 2, "general": 4},
        languages={"en": 5},
        tier=2,
    ),
)


class Config(msgspec.Struct, kw_only=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    data: DataSettings = msgspec.field(default_factory=DataSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    projection: ProjectionSettings = msgspec.field(default_factory=ProjectionSettings)
    # One table per connector, e.g. [connectors.sms]; each connector validates its own.
    connectors: dict[str, dict[str, Any]] = {}
    intake: IntakeSettings = msgspec.field(default_factory=IntakeSettings)
    router: RouterPolicy = msgspec.field(default_factory=RouterPolicy)
    runner: RunnerSettings = msgspec.field(default_factory=RunnerSettings)
    agents: tuple[AgentSeed, ...] = DEMO_ROSTER
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    health: HealthSettings = msgspec.field(default_factory=HealthSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir)

    @property
    def projection_target(self) -> str:
        return self.projection.dsn or str(self.data_dir / "timelines.db")


SHORT_NAMES = {
    "RELAYDESK_NATS_URL": ("nats", "url"),
    "RELAYDESK_API_TOKEN": ("api", "token"),
    "RELAYDESK_TWILIO_AUTH_TOKEN": ("connectors", "sms.auth_token"),
    "RELAYDESK_META_APP_SECRET": ("connectors", "social.app_secret"),
    "RELAYDESK_DATA_DIR": ("data", "dir"),
}


def _overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    tables = {f.name for f in msgspec.structs.fields(Config) if f.name not in ("agents", "connectors")}
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if name in SHORT_NAMES:
            table, key = SHORT_NAMES[name]
        elif name.startswith("RELAYDESK_CONNECTOR_"):
            rest = name[len("RELAYDESK_CONNECTOR_") :].lower()
            connector, _, setting = rest.partition("_")
            if not setting:
                continue
            table, key = "connectors", f"{connector}.{setting}"
        elif name.startswith("RELAYDESK_"):
            rest = name[len("RELAYDESK_") :].lower()
            table, _, key = rest.partition("_")
            if table not in tables or not key:
                continue
        else:
            continue
        out.setdefault(table, {})[key] = value
    return out


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = msgspec.toml.decode(p.read_bytes())
        except msgspec.DecodeError as err:
            raise ConfigError(f"{p}: not valid TOML: {err}") from err
    for table, values in _overrides(env).items():
        for key, value in values.items():
            if table == "connectors":
                # RELAYDESK_CONNECTOR_SMS_PORT=9001 or a short name -> [connectors.sms] port
                name, _, setting = key.partition(".")
                raw.setdefault("connectors", {}).setdefault(name, {})[setting] = value
            else:
                raw.setdefault(table, {})[key] = value
    try:
        # strict=False lets "8080" from the environment stand for an int.
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(f"invalid configuration: {err}") from err
