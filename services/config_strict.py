"""The checks that make the configuration refuse mistakes (services/config.py runs them).

A typo in a config file or an environment variable used to be ignored silently, so a service
ran on a default its operator thought they had changed. Here: unknown keys in any table
(nested ones and array-of-tables entries too) and unknown ``RELAYDESK_*`` variables, each
named with the closest known name, and ``RELAYDESK_<NAME>_FILE`` secrets read from files.
Every function returns the problems it found (strings for a person) rather than raising on
the first, so ``relaydesk config check`` can list them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

ENV_PREFIX = "RELAYDESK_"
FILE_SUFFIX = "_FILE"

# RELAYDESK_* variables that are not configuration: read by other code (logging, the NATS
# server config's per-role passwords, tests and benchmarks), so they are neither applied
# nor refused.
NOT_CONFIG = frozenset(
    {
        "RELAYDESK_LOG_LEVEL",  # services/logs.py
        "RELAYDESK_LOG_FORMAT",  # services/logs.py
        "RELAYDESK_TEST_PG_DSN",  # tests and `bench rebuild`: the PostgreSQL to test against
        "RELAYDESK_CHROMIUM",  # tests/browser.py
        "RELAYDESK_CHROMEDRIVER",  # tests/browser.py
        "RELAYDESK_SAMPLE_REPORT_PNG",  # tests/reports: where to keep a sample chart
        # deploy/compose.yaml's inputs, interpolated by compose into RELAYDESK_CONNECTOR_* (an
        # operator exports them in the shell that may also run relaydesk).
        "RELAYDESK_EMAIL_DOMAINS",
        "RELAYDESK_CHAT_ALLOWED_ORIGINS",
    }
)
# RELAYDESK_NATS_PASSWORD_<ROLE>: each role's password, read by nats-server from its own
# environment (deploy/nats/auth.conf); compose gives every container the whole set.
NOT_CONFIG_PREFIXES = ("RELAYDESK_NATS_PASSWORD_",)


def is_not_config(name: str) -> bool:
    return name in NOT_CONFIG or name.startswith(NOT_CONFIG_PREFIXES)


def did_you_mean(word: str, choices: Iterable[str], *, shape: str = "'{}'") -> str:
    """`` (did you mean 'port'?)`` when a choice is close to ``word``, else ""."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean {shape.format(close[0])}?)" if close else ""


def table_label(path: Sequence[str | int]) -> str:
    """Where a key lives, as TOML writes it: ``[api]``, ``[router.customer_tiers.gold]``,
    ``[[agents]] #2``, ``[[delivery.endpoints]] #1``; the top level is ``the top level``."""
    if not path:
        return "the top level"
    for i, part in enumerate(path):
        if isinstance(part, int):
            head = ".".join(str(p) for p in path[:i])
            label = f"[[{head}]] #{part + 1}"
            rest = path[i + 1 :]
            return f"{label} {table_label(rest)}" if rest else label
    return "[" + ".".join(str(p) for p in path) + "]"


def unknown_keys(value: Any, type_: type[Any] | mi.Type, path: Sequence[str | int] = ()) -> list[str]:
    """Every key in ``value`` (decoded TOML) that ``type_`` has no field for, at any depth."""
    info = type_ if isinstance(type_, mi.Type) else mi.type_info(type_)
    problems: list[str] = []
    _walk(value, info, list(path), problems)
    return problems


def _walk(value: Any, info: mi.Type, path: list[str | int], problems: list[str]) -> None:
    if isinstance(info, mi.UnionType):
        # e.g. ``list[str] | str``, ``int | None``: follow the member that fits the value's shape.
        for member in info.types:
            if _fits(value, member):
                _walk(value, member, path, problems)
                return
        return
    if isinstance(info, mi.StructType) and isinstance(value, Mapping):
        fields = {f.encode_name: f for f in info.fields}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                problems.append(_unknown(path, str(key), fields, item))
            else:
                _walk(item, field.type, [*path, str(key)], problems)
    elif isinstance(info, mi.DictType) and isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, info.value_type, [*path, str(key)], problems)
    elif isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)) and isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, info.item_type, [*path, i], problems)


def _fits(value: Any, info: mi.Type) -> bool:
    if isinstance(value, Mapping):
        return isinstance(info, (mi.StructType, mi.DictType))
    if isinstance(value, list):
        return isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType, mi.TupleType))
    return False


def _unknown(path: Sequence[str | int], key: str, fields: Mapping[str, Any], item: Any) -> str:
    if not path:
        kind = "table" if isinstance(item, Mapping | list) else "key"
        if kind == "table":
            return f"unknown table [{key}]{did_you_mean(key, fields, shape='[{}]')}"
        return f"unknown top-level key {key!r}{did_you_mean(key, fields)}"
    return f"{table_label(path)} unknown key {key!r}{did_you_mean(key, fields)}"


def settings_problems(table: Mapping[str, Any], settings: type[Any], path: Sequence[str | int]) -> list[str]:
    """What is wrong with a plugin's settings table: its unknown keys, else the values that
    do not convert to ``settings`` (the check the plugin itself makes when it starts)."""
    unknown = unknown_keys(table, settings, path)
    if unknown:
        return unknown
    try:
        msgspec.convert(dict(table), settings, strict=False)
    except msgspec.ValidationError as err:
        return [validation_problem(err, path)]
    return []


def validation_problem(err: msgspec.ValidationError, path: Sequence[str | int]) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.port``` as ``[api] port: expected `int`, got `str```."""
    text = str(err)
    message, _, where = text.rpartition(" - at `")
    if not message:
        return f"{table_label(path)} {text}"
    parts: list[str | int] = list(path)
    inner = where.rstrip("`").removeprefix("$")
    # msgspec does not name a table's key (``$.sla_seconds[...]``): the problem is one of its values.
    of_value = inner.endswith("[...]")
    inner = inner.replace("[...]", "")
    key = ""
    for token in inner.replace("]", "").replace("[", ".#").split("."):
        if not token:
            continue
        if token.startswith("#") and token[1:].isdigit():
            if key:
                parts.append(key)
                key = ""
            parts.append(int(token[1:]))
        else:
            if key:
                parts.append(key)
            key = token
    detail = ("each value: " if of_value else "") + message[0].lower() + message[1:]
    return f"{table_label(parts)} {key}: {detail}" if key else f"{table_label(parts)} {detail}"


# -- the environment ---------------------------------------------------------------------------


# What deploy/k8s/secret.template.yaml holds in every key until the operator writes the real one.
SECRET_PLACEHOLDER = "REPLACE_ME"


def read_secret_files(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``env`` with every ``RELAYDESK_<NAME>_FILE=/path`` replaced by ``RELAYDESK_<NAME>=<the
    file's content>`` (trailing newlines stripped, CRLF too, and a UTF-8 byte order mark): the
    Docker/Kubernetes secrets convention. Both set, a file that cannot be read, an empty one or
    one still holding the template's ``REPLACE_ME`` is a problem naming the variable and the path.

    Empty and placeholder files were taken as the secret (found by an audit): the Secret template
    applied unfilled ran every service with the publicly known operator token ``REPLACE_ME``, and
    an empty Twilio token file gave an SMS connector that said ready and refused every webhook."""
    out = {name: value for name, value in env.items() if not _is_file_ref(name)}
    problems: list[str] = []
    for name, path in env.items():
        if not _is_file_ref(name):
            continue
        target = name.removesuffix(FILE_SUFFIX)
        if target in env:
            problems.append(f"{name} and {target} are both set: keep one")
            continue
        try:
            # utf-8-sig: a file saved by a Windows editor starts with a BOM the secret is not.
            value = Path(path).read_text(encoding="utf-8-sig").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            problems.append(f"{name}: cannot read {path}: {reason}")
            continue
        if not value.strip():
            problems.append(f"{name}: {path} is empty: write the secret into it, or unset {name}")
        elif SECRET_PLACEHOLDER in value:
            problems.append(
                f"{name}: {path} still holds the placeholder {SECRET_PLACEHOLDER}"
                " (deploy/k8s/secret.template.yaml): write the real secret"
            )
        else:
            out[target] = value
    return out, problems


def _is_file_ref(name: str) -> bool:
    return name.startswith(ENV_PREFIX) and name.endswith(FILE_SUFFIX) and len(name) > len(ENV_PREFIX + FILE_SUFFIX)


def env_names(tables: Mapping[str, Iterable[str]], short_names: Iterable[str]) -> list[str]:
    """Every configuration variable there is (for suggestions): one per table key, and the short names."""
    names = [f"{ENV_PREFIX}{table.upper()}_{key.upper()}" for table, keys in tables.items() for key in keys]
    return sorted({*names, *short_names})


def split_name_and_key(rest: str, names: Iterable[str]) -> tuple[str, str]:
    """``my_chan_api_key`` as (connector or sink name, key): names may contain ``_`` as keys
    do, so the longest known name the variable starts with wins (``my_chan`` before ``my``);
    a name nobody knows is split at its first ``_`` (``RELAYDESK_CONNECTOR_SMS_PORT``)."""
    rest = rest.lower()
    for name in sorted({n.lower() for n in names}, key=len, reverse=True):
        if rest.startswith(name + "_") and len(rest) > len(name) + 1:
            return name, rest[len(name) + 1 :]
    name, _, key = rest.partition("_")
    return name, key


def unknown_variable(name: str, known: Iterable[str]) -> str:
    # Compared without the common prefix, which would make every name look alike.
    rest = {k.removeprefix(ENV_PREFIX): k for k in known}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), sorted(rest), n=1, cutoff=0.6)
    hint = f" (did you mean {rest[close[0]]}?)" if close else ""
    return f"unknown environment variable {name}{hint}"
