"""RELAYDESK_* environment variables as overrides of the configuration's tables.

An override names a table and a key (``RELAYDESK_API_PORT=9000`` sets ``[api] port``); a few
well-known secrets have short names (``SHORT_NAMES``); ``RELAYDESK_CONNECTOR_<NAME>_<KEY>`` and
``RELAYDESK_SINK_<NAME>_<KEY>`` set a key of a connector's or a sink's table. A variable that
names no key is a problem naming it (``services.config_strict``), and a problem with a value an
override set names the variable (``blame``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from services import config_strict as strict
from services.config import Config

SHORT_NAMES = {
    "RELAYDESK_NATS_URL": ("nats", "url"),
    "RELAYDESK_API_TOKEN": ("api", "token"),
    "RELAYDESK_TWILIO_AUTH_TOKEN": ("connectors", "sms.auth_token"),
    "RELAYDESK_META_APP_SECRET": ("connectors", "social.app_secret"),
    "RELAYDESK_DATA_DIR": ("data", "dir"),
}
CONNECTOR_PREFIX = "RELAYDESK_CONNECTOR_"
SINK_PREFIX = "RELAYDESK_SINK_"  # RELAYDESK_SINK_ZENDESK_API_TOKEN -> [sinks.zendesk] api_token
# Tables an environment variable may set a key of (not the arrays of tables, not connectors).
_ENV_TABLES = {
    f.name: f.type
    for f in msgspec.structs.fields(Config)
    if f.name not in ("agents", "connectors", "sinks")
    and isinstance(f.type, type)
    and issubclass(f.type, msgspec.Struct)
}
_ENV_KEYS = {table: {f.name for f in msgspec.structs.fields(t)} for table, t in _ENV_TABLES.items()}


class Overrides(msgspec.Struct):
    values: dict[str, dict[str, str]]  # table -> key -> value ("connectors": "<name>.<key>")
    origins: dict[tuple[str, str], str]  # (table, key) -> the variable that set it
    problems: list[str]


def _overrides(
    env: Mapping[str, str], connector_names: Iterable[str] = (), sink_names: Iterable[str] = ()
) -> Overrides:
    """``connector_names`` / ``sink_names``: the names a ``RELAYDESK_CONNECTOR_<NAME>_<KEY>`` /
    ``RELAYDESK_SINK_<NAME>_<KEY>`` may mean (their tables and the installed ones), so a name
    with ``_`` in it (``my_chan``) is split from its key unambiguously."""
    out = Overrides({}, {}, [])
    known = strict.env_names(_ENV_KEYS, SHORT_NAMES)
    for name, value in sorted(env.items()):
        if not name.startswith(strict.ENV_PREFIX) or strict.is_not_config(name):
            continue
        if name in SHORT_NAMES:
            table, key = SHORT_NAMES[name]
        elif name.startswith(CONNECTOR_PREFIX):
            # Connector keys are the connector's to check (Connector.from_config).
            connector, setting = strict.split_name_and_key(name[len(CONNECTOR_PREFIX) :], connector_names)
            if not connector or not setting:
                out.problems.append(f"{name}: name a connector and a key, e.g. RELAYDESK_CONNECTOR_SMS_PORT")
                continue
            table, key = "connectors", f"{connector}.{setting}"
        elif name.startswith(SINK_PREFIX):
            sink, setting = strict.split_name_and_key(name[len(SINK_PREFIX) :], sink_names)
            if not sink or not setting:
                out.problems.append(f"{name}: name a sink and a key, e.g. RELAYDESK_SINK_ZENDESK_API_TOKEN")
                continue
            table, key = "sinks", f"{sink}.{setting}"
        else:
            table, _, key = name[len(strict.ENV_PREFIX) :].lower().partition("_")
            if key not in _ENV_KEYS.get(table, ()):
                out.problems.append(strict.unknown_variable(name, known))
                continue
        out.values.setdefault(table, {})[key] = value
        out.origins[(table, key)] = name
    return out


def overrides_of(env: Mapping[str, str], raw: Mapping[str, Any]) -> Overrides:
    """The overrides ``env`` sets on the file's tables ``raw``, and the variables that name
    nothing."""
    return _overrides(env, *_named_tables(raw, env))


def _named_tables(raw: Mapping[str, Any], env: Mapping[str, str]) -> tuple[set[str], set[str]]:
    """The connector and sink names an environment variable may name: the file's
    ``[connectors.<name>]`` / ``[sinks.<name>]`` tables and the installed ones (entry points,
    read only when such a variable is set)."""
    connectors = set(raw.get("connectors") or {}) if isinstance(raw.get("connectors"), dict) else set()
    sinks = set(raw.get("sinks") or {}) if isinstance(raw.get("sinks"), dict) else set()
    if any(name.startswith(CONNECTOR_PREFIX) for name in env):
        from connectors.sdk import registry  # not at the top: the SDK is the connectors' business

        connectors.update(registry.available())
    if any(name.startswith(SINK_PREFIX) for name in env):
        from services.sinks.sdk import registry as sink_registry

        sinks.update(sink_registry.available())
    return connectors, sinks


def blame(problem: str, origins: Mapping[tuple[str, str], str]) -> str:
    """``problem`` with the environment variable that set the key it names, if one did."""
    for (table, key), name in origins.items():
        if table == "connectors":
            table, _, key = f"connectors.{key}".rpartition(".")
        if problem.startswith((f"[{table}] {key}:", f"[{table}] unknown key {key!r}")):
            return f"{problem} (set by {name})"
    return problem
