"""``relaydesk config check FILE`` and ``relaydesk config show [--config FILE]``.

``check`` lists every problem (unknown keys with the closest known one, unknown RELAYDESK_*
variables, wrong types, each ``[connectors.<name>]`` table against its installed connector)
and exits 1, or prints ``ok: FILE``. ``show`` prints the effective configuration (file, then
environment) as TOML with every secret shown as ``****``, so it can be pasted into an issue.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from services import config_strict as strict
from services.config import check
from services.url_secrets import MASK, redact

# A key naming one of these holds a secret: its string values (and everything under it) are masked.
SECRET_WORDS = ("secret", "token", "password", "key")
SECRET_KEYS = frozenset({"auth_users"})  # secrets whose names do not say so (email AUTH user -> password)
# Named like a secret but public: the chat widget's key is in every embedding page; the
# others are paths to files (the file holds the secret, the path does not).
PUBLIC_KEYS = frozenset({"widget_key", "tls_key", "nkey_seed", "creds"})


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    parser = sub.add_parser(
        "config",
        help="check a config file, or show the effective configuration (secrets masked)",
        description="Check a config file, or show the effective configuration with secrets masked.",
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check_parser = actions.add_parser(
        "check",
        help="report every problem in FILE (and in RELAYDESK_* variables); exit 1 if any",
        description="Report every problem in FILE and in the RELAYDESK_* environment: unknown keys "
        "(with the closest known one), unknown variables, wrong types, connector tables. Exit 0 and "
        "'ok: FILE' when there is none, else exit 1.",
    )
    check_parser.add_argument("file", metavar="FILE", help="the TOML config file")
    check_parser.add_argument(
        "--file-only", action="store_true", help="ignore the RELAYDESK_* environment (check the file alone)"
    )
    show = actions.add_parser(
        "show",
        help="print the effective configuration as TOML, secrets as ****",
        description="Print the effective configuration (defaults, then --config FILE, then RELAYDESK_* "
        "variables) as TOML; tokens, passwords, keys, secrets and passwords in URLs show as ****.",
    )
    show.add_argument("--config", metavar="FILE", help="TOML config file (default: none, built-in defaults)")


def config_command(args: argparse.Namespace) -> int:
    if args.config_action == "check":
        return check_command(args.file, env={} if args.file_only else None)
    return show_command(args.config)


def check_command(path: str, env: Mapping[str, str] | None = None) -> int:
    config, problems = check(path, env, connectors=connector_problems)
    if config is not None:  # [sinks.<name>] tables, each against its installed sink
        from services.delivery.endpoints import settings_problems as delivery_problems
        from services.sinks.sdk.registry import table_problems

        problems += table_problems(config.sinks)
        # What the delivery service refuses at start (limits, endpoints), said here first.
        problems += [f"[delivery] {p}" for p in delivery_problems(config.delivery, config.slack)]
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {path}", file=sys.stderr)
        return 1
    print(f"ok: {path}")
    return 0


def show_command(path: str | None, env: Mapping[str, str] | None = None) -> int:
    config, problems = check(path, env, connectors=connector_problems)
    if config is None or problems:
        for problem in problems:
            print(f"relaydesk: {problem}", file=sys.stderr)
        return 1
    shown = masked(_drop_none(msgspec.to_builtins(config)))
    print(to_toml(shown), end="")
    return 0


def connector_problems(tables: Mapping[str, Any]) -> list[str]:
    """Each ``[connectors.<name>]`` table checked against its installed connector's settings
    (the same check the connector makes when it starts)."""
    from connectors.sdk import registry
    from connectors.sdk.errors import ConnectorNotFound
    from services.up import is_enabled

    installed = registry.available()
    problems: list[str] = []
    for name, table in tables.items():
        if name not in installed:
            hint = strict.did_you_mean(name, installed)
            problems.append(
                f"[connectors.{name}] no installed connector named {name!r}{hint}; installed: {', '.join(installed)}"
            )
            continue
        if not isinstance(table, Mapping):
            continue  # not a table: the conversion of [connectors] reports it
        try:
            connector = registry.load(name)
        except ConnectorNotFound as err:
            problems.append(f"[connectors.{name}] {err}")
            continue
        found = strict.settings_problems(table, connector.Settings, ["connectors", name])
        if not found and is_enabled(table.get("enabled", True)):
            found += _start_problems(connector, name, table)
        problems += found
    return problems


def _start_problems(connector: Any, name: str, table: Mapping[str, Any]) -> list[str]:
    """The connector's own checks, as it makes them at its start (a required key, a secret too
    short). What ``relaydesk up`` fills in (``FILLED_BY_UP``: chat's widget key and session
    secret) is a warning only: the file serves ``up`` as well as ``relaydesk connector <name>``."""
    from connectors.sdk.errors import ConnectorConfigError
    from services.up import FILLED_BY_UP

    try:
        connector.from_config(table)
    except ConnectorConfigError as err:
        filled = FILLED_BY_UP.get(name)
        if not filled:
            return [str(err)]
        try:  # a value long enough for any check stands in for what up fills in
            connector.from_config({**dict.fromkeys(filled, "x" * 32), **table})
        except ConnectorConfigError as still:
            return [str(still)]
        print(
            f"warning: {err}: `relaydesk connector {name}` refuses to start with this file;"
            f" `relaydesk up` fills in {', '.join(filled)}",
            file=sys.stderr,
        )
    return []


# -- masking ---------------------------------------------------------------------------------


def is_secret_key(key: str) -> bool:
    name = key.lower()
    if name in PUBLIC_KEYS:
        return False
    return name in SECRET_KEYS or any(word in name for word in SECRET_WORDS)


def masked(value: Any, *, secret: bool = False) -> Any:
    """``value`` with every secret replaced by ``****`` (an empty one stays empty: "not set" is
    worth seeing). Numbers and booleans are never secrets (``token_ttl``, ``reply_to_token``)."""
    if isinstance(value, dict):
        return {k: masked(v, secret=secret or is_secret_key(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, secret=secret) for v in value]
    if isinstance(value, str):
        if secret:
            return MASK if value else ""
        return redact(value)  # a password in a URL or a DSN, a Slack webhook's path
    return value


def _drop_none(value: Any) -> Any:
    """TOML has no null: an unset optional (``max_total``) is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value if v is not None]
    return value


# -- TOML out ---------------------------------------------------------------------------------
# msgspec reads TOML but writes it only through the tomli_w package; the configuration's
# shapes are few (tables, arrays of tables, scalars, inline lists and tables), so a small
# writer here saves a dependency. The unit tests read its output back.

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _write_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _write_table(table: Mapping[str, Any], path: list[str], lines: list[str], *, header: str = "") -> None:
    scalars = [(k, v) for k, v in table.items() if not _is_table(v) and not _is_table_array(v)]
    if header:
        lines += ["", header]
    elif path and scalars:
        lines += ["", f"[{'.'.join(_key(p) for p in path)}]"]
    lines += [f"{_key(k)} = {_literal(v)}" for k, v in scalars]
    for k, v in table.items():
        if _is_table(v):
            _write_table(v, [*path, k], lines)
    for k, v in table.items():
        if _is_table_array(v):
            dotted = ".".join(_key(p) for p in [*path, k])
            for item in v:
                _write_table(item, [*path, k], lines, header=f"[[{dotted}]]")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_key(str(k))} = {_literal(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(str(value), ensure_ascii=False)
