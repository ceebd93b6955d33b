"""Relaydesk configuration: a TOML file, then RELAYDESK_* environment overrides.

Every service takes the same file (``--config``). An override names a table and a key:
``RELAYDESK_API_PORT=9000`` sets ``[api] port``. A few well-known secrets have short names
(``RELAYDESK_NATS_URL``, ``RELAYDESK_API_TOKEN``, ``RELAYDESK_TWILIO_AUTH_TOKEN``).
``RELAYDESK_<NAME>_FILE=/run/secrets/x`` reads ``RELAYDESK_<NAME>`` from a file (the overrides:
``services/config_env.py``).

Mistakes are errors, not silently ignored (services/config_strict.py): an unknown key in any
table, an unknown RELAYDESK_* variable (except the few in ``config_strict.NOT_CONFIG``), a
value of the wrong type. Each ``[connectors.<name>]`` table is checked by its connector.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from router.policy import RouterPolicy, Seconds
from services import config_strict as strict
from services.api.console_settings import ConsoleSettings, console_problems
from services.api.operators import problems as operator_problems
from services.api.templates import TemplateSettings
from services.config_agents import DEMO_ROSTER, AgentSeed
from services.delivery.settings import DeliverySettings
from services.delivery.slack_settings import SlackSettings


class ConfigError(ValueError):
    """What is wrong with the configuration: one line per problem (``problems``)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# Values no deployment means: refused at load with the range (``relaydesk config check`` lists them).
# (``router.policy`` has the rest: ``Seconds`` above 0, an ``AgentTier``.)
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
OneOrMore = Annotated[int, msgspec.Meta(ge=1)]


class NatsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = ""  # empty: `relaydesk up` starts an embedded server
    port: Port = 4222  # the embedded server's preferred port; another if taken
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1  # JetStream's own limit
    connect_timeout: Seconds = 5.0
    # Credentials (services/bus/auth.py). Empty: the role's credentials that `relaydesk up`
    # generated in the data dir, if any, else anonymous. RELAYDESK_NATS_USER, … set them.
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""  # a .creds file (JWT + nkey seed; needs the nkeys package)
    nkey_seed: str = ""  # a file holding an nkey seed (needs the nkeys package)
    tls_ca: str = ""  # CA bundle to verify the server (a tls:// URL, or any of these, turns TLS on)
    tls_cert: str = ""  # client certificate, when the server verifies clients
    tls_key: str = ""


class SecuritySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Seal personal data in the log with a per-customer key (events.personal), so that
    # erasing a customer destroys the key. Off: written in clear; sealed data still reads.
    encrypt_personal_data: bool = True


class RetentionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Message bodies older than this many days become unreadable (their day keys are
    # destroyed by a sweep); 0 keeps them.
    message_days: Annotated[int, msgspec.Meta(ge=0)] = 0
    # How long RD_INBOUND keeps the raw provider messages (an audit trail, a `dlq retry`
    # source). At least 3 days: providers retry for up to 36 hours and the dedupe window is 48.
    # Lowering it on an existing stream takes `relaydesk setup` (it deletes what is older).
    raw_message_days: Annotated[int, msgspec.Meta(ge=3, le=3650)] = 14


class HealthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Every service process serves /healthz, /readyz and /metrics here (services/health/).
    # The image sets host 0.0.0.0. `relaydesk up` takes another free port when this one is
    # taken; a single service fails at start instead. 0: no health listener.
    host: str = "127.0.0.1"
    port: Port = 9090


class TracingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # OpenTelemetry (services/tracing.py): off by default. On, a trace id set by the
    # connector travels in NATS headers through intake, router and delivery and is on
    # every log line of that message; spans go to the OTLP endpoint when one is set.
    enabled: bool = False
    otlp_endpoint: str = ""  # e.g. http://otel-collector:4318/v1/traces (OTLP over HTTP)
    service_name: str = "relaydesk"
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0


class DataSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    dir: str = ".relaydesk"


class ApiSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    token: str = ""
    # A reply still without MessageSent / DeliveryFailed after this long is queued for its
    # connector again (deduplicated by reply id): the outbox half of the reply command.
    reply_requeue_seconds: Seconds = 30.0
    # /readyz says not ready when the API's view leaves an end of the log it saw unreached
    # this long (a stopped reader, a paused process); a burst folded sooner is no lag.
    view_stale_seconds: Seconds = 10.0
    # The API's address as providers reach it (Twilio fetches MMS media from signed links
    # under it, services.api.uploads); empty: http://<host>:<port>.
    public_url: str = ""
    # The key the API signs agent tokens with (services.api.tokens): empty, the one `up`
    # generated into <data dir>/api-signing-key, else one derived from the operator token.
    # Rotating it invalidates every agent token issued before, unless the old key is listed in
    # extra_signing_keys: accepted (tokens, sessions, idempotency records, file links), never
    # used to sign; a list or comma-separated, so RELAYDESK_API_EXTRA_SIGNING_KEYS(_FILE) sets it.
    signing_key: str = ""
    extra_signing_keys: list[str] | str = []
    # Named operator tokens, name -> "sha256:<hex>" (services.api.operators): each acts as
    # operator:<name>. `relaydesk operators new-token <name>` prints a token and its line.
    operators: dict[str, str] = msgspec.field(default_factory=dict)


class ProjectionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Empty: SQLite at <data dir>/timelines.db. Or postgresql://user@host/db.
    dsn: str = ""
    batch_size: OneOrMore = 500
    # "I/N": one of N projectors sharing the work by customer (each keeps its own checkpoint).
    partition: str = "0/1"
    # The projector's /readyz says not ready when events wait for it and its position has not
    # moved this long (a store that refuses, a lost subscription); a slow fold that moves is no stall.
    stale_seconds: Seconds = 120.0

    def partition_pair(self) -> tuple[int, int]:
        index, _, count = self.partition.partition("/")
        try:
            i, n = int(index), int(count)
        except ValueError as err:
            raise ConfigError(f"[projection] partition must look like 0/2, not {self.partition!r}") from err
        if not 0 <= i < n:
            raise ConfigError(f"[projection] partition {self.partition!r}: need 0 <= I < N")
        return i, n


class RunnerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the router process runs (not what it decides: that is [router])."""

    # A standby takes over this long after the active router stops renewing its lease.
    lease_seconds: Seconds = 5.0
    # Timers (offer expiry, escalation waits) are checked at least this often.
    tick_seconds: Seconds = 0.2
    # A snapshot of routing state every this many events, so restarts stay fast.
    snapshot_every: OneOrMore = 5_000
    # Name of this router instance in the lease (empty: router-<random>).
    instance_id: str = ""


class RoutingRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pattern: str = ""  # regex searched in the message text (case-insensitive)
    recipients: tuple[str, ...] = ()  # globs on the address written to, e.g. "billing@*"
    skills: dict[str, int] = {}
    priority: int = 0
    channels: tuple[str, ...] = ()


class IntakeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    languages: tuple[str, ...] = ("en", "es", "fr", "de", "pt", "it")
    default_language: str = "en"
    default_skills: dict[str, int] = msgspec.field(default_factory=lambda: {"general": 1})
    default_region: str = "US"
    # How long a message intake took may go unacknowledged before NATS hands it to another
    # intake (one that died mid-plan): a message accepted before a crash is routed this long
    # after. Longer plans send in-progress acks (services.intake.settling).
    ack_wait_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=300.0)] = 5.0
    # Provider-specific email rules, only for the domains listed (services.identity.addresses.IdentityRules):
    # e.g. email_ignore_dots = ["gmail.com"], email_strip_plus = ["gmail.com"],
    # email_domain_aliases = { "googlemail.com" = "gmail.com" }.
    email_ignore_dots: tuple[str, ...] = ()
    email_strip_plus: tuple[str, ...] = ()
    email_domain_aliases: dict[str, str] = {}
    rules: tuple[RoutingRule, ...] = (
        RoutingRule(pattern=r"refund|invoice|charge|billing|payment|reembolso|factura|cobro", skills={"billing": 1}),
        RoutingRule(pattern=r"error|crash|bug|outage|login|password|contraseña", skills={"technical": 1}),
    )


class RoutingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The registry of names routing knows (``GET /v1/skills``, ``GET /v1/languages``). An
    agent, a routing rule or a transfer that names another is refused, so a typo cannot leave
    work unroutable in silence (``services.config_names``, ``services.api.registry``)."""

    skills: tuple[str, ...] = ("general", "billing", "technical")
    # Empty: the [intake] languages and its default_language (what intake detects and routes by).
    languages: tuple[str, ...] = ()

    def known_languages(self, intake: IntakeSettings) -> tuple[str, ...]:
        if self.languages:
            return self.languages
        return tuple(dict.fromkeys((*intake.languages, intake.default_language)))


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    data: DataSettings = msgspec.field(default_factory=DataSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    projection: ProjectionSettings = msgspec.field(default_factory=ProjectionSettings)
    # One table per connector, e.g. [connectors.sms]; each connector validates its own.
    connectors: dict[str, dict[str, Any]] = {}
    # One table per helpdesk sink, e.g. [sinks.zendesk]; each sink validates its own
    # (services/sinks: unknown keys and missing settings are errors when it starts).
    sinks: dict[str, dict[str, Any]] = {}
    intake: IntakeSettings = msgspec.field(default_factory=IntakeSettings)
    routing: RoutingSettings = msgspec.field(default_factory=RoutingSettings)
    router: RouterPolicy = msgspec.field(default_factory=RouterPolicy)
    runner: RunnerSettings = msgspec.field(default_factory=RunnerSettings)
    agents: tuple[AgentSeed, ...] = DEMO_ROSTER
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    slack: SlackSettings = msgspec.field(default_factory=SlackSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    health: HealthSettings = msgspec.field(default_factory=HealthSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)
    console: ConsoleSettings = msgspec.field(default_factory=ConsoleSettings)
    # WhatsApp message templates ([[templates]], services.api.templates).
    templates: tuple[TemplateSettings, ...] = ()

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir)

    @property
    def projection_target(self) -> str:
        return self.projection.dsn or str(self.data_dir / "timelines.db")


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate. Raises
    ``ConfigError`` listing every problem found."""
    config, problems = check(path, env)
    if config is None or problems:
        raise ConfigError(*problems)
    return config


def check(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    connectors: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> tuple[Config | None, list[str]]:
    """The configuration and every problem with it (the config is None when it cannot be built).
    ``connectors`` checks the ``[connectors.<name>]`` tables (``relaydesk config check`` passes
    one; a service leaves its table to the connector, which checks it when it starts)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = p.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None, [f"config file not found: {p}"]
        except OSError as err:
            # A directory, a file this user may not read: a problem like any other, not a
            # traceback from every command (found by an audit).
            return None, [f"cannot read {p}: {err.strerror or err}"]
        try:
            raw = msgspec.toml.decode(data)
        except msgspec.DecodeError as err:
            return None, [f"{p}: not valid TOML: {err}"]
    from services.config_env import blame, overrides_of  # it reads Config

    env, problems = strict.read_secret_files(env)
    overrides = overrides_of(env, raw)
    problems += overrides.problems
    for table, values in overrides.values.items():
        for key, value in values.items():
            if table in ("connectors", "sinks"):
                # RELAYDESK_CONNECTOR_SMS_PORT=9001 or a short name -> [connectors.sms] port
                name, _, setting = key.partition(".")
                raw.setdefault(table, {}).setdefault(name, {})[setting] = value
            elif isinstance(raw.setdefault(table, {}), dict):
                raw[table][key] = value
    problems += _nats_urls(raw)
    problems += strict.unknown_keys(raw, Config)
    if connectors is not None and isinstance(raw.get("connectors"), dict):
        problems += connectors(raw["connectors"])
    # Table by table, so one bad value does not hide the next table's; and the values of the
    # keys it knows even in a table with unknown ones (said above), so a check lists them all.
    fields = {f.name: f.type for f in msgspec.structs.fields(Config)}
    for table, value in raw.items():
        if table not in fields:
            continue  # an unknown table: said above
        try:
            msgspec.convert(_known_keys(value, fields[table]), fields[table], strict=False)
        except msgspec.ValidationError as err:
            problem = strict.validation_problem(err, [table])
            if "unknown field" not in problem:  # a nested table's unknown key: said above
                problems.append(problem)
    problems = [blame(problem, overrides.origins) for problem in problems]
    if problems:
        return None, problems
    try:
        # strict=False lets "8080" from the environment stand for an int.
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as err:
        return None, [strict.validation_problem(err, [])]
    try:
        config.projection.partition_pair()
    except ConfigError as err:
        problems += err.problems
    if config.projection.dsn:
        from services.timelines import target_problem  # not at the top: the stores are heavy

        if (problem := target_problem(config.projection.dsn)) is not None:
            problems.append(f"[projection] dsn: {problem}")
    from services.config_names import registry_problems  # it reads Config

    problems += registry_problems(config)
    problems += console_problems(config.console)
    problems += operator_problems(config.api.operators)
    return config, problems


def _known_keys(value: Any, table_type: Any) -> Any:
    """A table's value without the keys its struct does not have (reported on their own)."""
    if not isinstance(value, dict) or not (isinstance(table_type, type) and issubclass(table_type, msgspec.Struct)):
        return value
    known = {f.encode_name for f in msgspec.structs.fields(table_type)}
    return {key: item for key, item in value.items() if key in known}


def _nats_urls(raw: dict[str, Any]) -> list[str]:
    """``[nats] url`` may be a list (TOML) or a comma-separated string: checked here, kept as
    one comma-separated string (what ``services.bus.auth.server_list`` splits again)."""
    nats = raw.get("nats")
    if not isinstance(nats, dict) or "url" not in nats:
        return []
    url = nats["url"]
    if isinstance(url, list):
        if not all(isinstance(item, str) for item in url):
            return ['[nats] url: a list of strings, e.g. url = ["nats://a:4222", "nats://b:4222"]']
        url = nats["url"] = ",".join(item.strip() for item in url)
    if not isinstance(url, str) or not url.strip():
        return []  # empty: the embedded server; a wrong type is reported by the conversion
    from services.bus.auth import server_list  # not at the top: services.bus.auth imports this module

    try:
        nats["url"] = ",".join(server_list(url))
    except ConfigError as err:
        return err.problems
    return []
