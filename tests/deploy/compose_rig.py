"""Read ``deploy/compose.yaml`` the way ``docker compose`` does, for a run without Docker.

Pure helpers (no processes; ``compose_run`` starts them): compose's ``${VAR:-default}`` /
``${VAR:?message}`` interpolation, YAML anchors and merge keys (PyYAML's ``safe_load`` resolves
``<<``), the short and long forms of ``environment``, ``ports``, ``secrets``, ``depends_on``
and ``volumes``, the image's ``ENV`` from the Dockerfile, and the two rewrites that put a
compose network on one machine's loopback: host names and container ports in values
(``nats-1:4222`` -> ``127.0.0.1:<free port>``, a ``postgres`` DSN -> a local database) and the
NATS server config (each node's ports, its routes to the others)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]


class ComposeError(ValueError):
    """compose.yaml (or a file it names) says something this run cannot honour: the reason."""


# -- interpolation ------------------------------------------------------------------------

# ``${...}`` with one level of nesting inside, as in ``${A:-${B}}``.
_DOLLAR = re.compile(r"\$(?:(\$)|\{((?:[^{}]|\{[^{}]*\})*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ``$$`` is a dollar, ``$VAR`` / ``${VAR}`` the
    variable (empty when unset), ``${VAR:-x}`` / ``${VAR-x}`` a default (when unset or empty /
    when unset), ``${VAR:?msg}`` / ``${VAR?msg}`` an error, ``${VAR:+x}`` / ``${VAR+x}`` x when set."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        if match.group(3):
            return variables.get(match.group(3), "")
        expr = match.group(2)
        parsed = _BRACED.fullmatch(expr)
        if parsed is None:
            raise ComposeError(f"invalid interpolation ${{{expr}}}")
        name, op, arg = parsed.groups()
        value = variables.get(name)
        if op is None:
            return value or ""
        missing = value is None or (op.startswith(":") and value == "")
        kind = op[-1]
        if kind == "-":
            return interpolate(arg, variables) if missing else str(value)
        if kind == "?":
            if missing:
                raise ComposeError(f"variable {name} is required: {arg or 'not set'}")
            return str(value)
        return "" if missing else interpolate(arg, variables)  # "+"

    return _DOLLAR.sub(one, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load_compose(path: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    """The file as compose sees it: anchors and ``<<`` merged, every value interpolated."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ComposeError(f"{path}: no services")
    out: dict[str, Any] = _interpolate_tree(data, variables)
    return out


def active_services(compose: Mapping[str, Any], profiles: Iterable[str] = ()) -> dict[str, Any]:
    """The services ``docker compose --profile …`` starts: those without ``profiles``, and
    those with one of ``profiles`` (an optional service, e.g. a helpdesk sink)."""
    wanted = set(profiles)
    return {
        name: spec
        for name, spec in compose["services"].items()
        if not spec.get("profiles") or wanted & set(spec["profiles"])
    }


# -- one service's keys, short and long forms ----------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """``environment:`` as a mapping or a ``KEY=VALUE`` list (a bare ``KEY`` passes the host's
    value in Docker: none here, so it is left out)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw if "=" in item]
        return {key: value for key, value in pairs}
    return {str(key): _scalar(value) for key, value in raw.items() if value is not None}


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def env_files(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("env_file") or []
    items = [raw] if isinstance(raw, (str, dict)) else raw
    return [item["path"] if isinstance(item, dict) else str(item) for item in items]


def command(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(arg) for arg in raw]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Each dependency and its condition (a plain list means ``service_started``)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def published_ports(service: Mapping[str, Any]) -> list[int]:
    """The container ports a service publishes (``"8080:8080"``, ``"127.0.0.1:80:8080/tcp"``,
    ``"8080"`` or ``{target: 8080, published: 80}``)."""
    out = []
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            out.append(int(item["target"]))
        else:
            out.append(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return out


def secret_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Path in the container -> secret name (``/run/secrets/<target>``, target defaulting to source)."""
    out = {}
    for item in service.get("secrets") or []:
        source, target = (item, item) if isinstance(item, str) else (item["source"], item.get("target", item["source"]))
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return out


@dataclass(frozen=True)
class Volume:
    source: str  # a path (bind mount, relative to the compose file) or a named volume
    target: str
    named: bool


def volumes(service: Mapping[str, Any]) -> list[Volume]:
    out = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            source, target = str(item.get("source", "")), str(item["target"])
            out.append(Volume(source, target, named=item.get("type") == "volume"))
            continue
        source, target = str(item).split(":")[:2]
        out.append(Volume(source, target, named=not source.startswith((".", "/", "~"))))
    return out


def tmpfs(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("tmpfs") or []
    return [raw] if isinstance(raw, str) else [str(item) for item in raw]


def dockerfile_env(path: Path) -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last stage (the image the services run)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words:
            continue
        if words[0].upper() == "FROM":
            env = {}
        elif words[0].upper() == "ENV" and len(words) == 2:
            parts = shlex.split(words[1])
            if parts and "=" not in parts[0]:  # the old form: ENV KEY value with spaces
                env[parts[0]] = " ".join(parts[1:])
            else:
                env.update(part.split("=", 1) for part in parts)  # type: ignore[misc]
    return env


# -- a compose network on loopback ---------------------------------------------------------

HostPorts = Mapping[tuple[str, int], int]  # (service name, container port) -> local port
_DSN = re.compile(r"postgres(?:ql)?://[^\s,\"']+")
_HOST_PORT = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*):(\d{2,5})\b")


def map_value(value: str, hosts: HostPorts, *, postgres: str | None = None, db_host: str = "postgres") -> str:
    """``value`` as seen from this machine: a DSN naming the compose database becomes
    ``postgres`` (a local DSN), and every ``<service>:<container port>`` the local port."""
    if postgres is not None:

        def dsn(match: re.Match[str]) -> str:
            return postgres if urlsplit(match.group(0)).hostname == db_host else match.group(0)

        value = _DSN.sub(dsn, value)

    def host_port(match: re.Match[str]) -> str:
        local = hosts.get((match.group(1), int(match.group(2))))
        return f"127.0.0.1:{local}" if local is not None else match.group(0)

    return _HOST_PORT.sub(host_port, value)


@dataclass(frozen=True)
class NatsPorts:
    client: int
    cluster: int
    monitor: int


NATS_DEFAULTS = NatsPorts(client=4222, cluster=6222, monitor=8222)
_KEY = re.compile(r"^(\s*)([A-Za-z_]+)(\s*[:=]\s*|\s+)(.+?)\s*$")


def localize_nats_conf(
    text: str, container_ports: NatsPorts, lookup: Callable[[str, int], int]
) -> tuple[str, set[str]]:
    """A nats-server config file for one node on loopback: its client, cluster and monitoring
    listeners (top-level ``port``/``listen``/``http``, ``cluster { port | listen }``) on
    ``127.0.0.1`` and the local ports ``lookup(node, container port)`` gives (``node`` "" for
    this one), and every ``nats-route://<node>:<port>`` pointing at that node's local port.
    Returns the text and what it rewrote (``client``, ``cluster``, ``monitor``, ``routes``)."""
    rewrote: set[str] = set()

    def route(match: re.Match[str]) -> str:
        rewrote.add("routes")
        return f"nats-route://127.0.0.1:{lookup(match.group(1), int(match.group(2)))}"

    text = re.sub(r"nats-route://([A-Za-z0-9_.-]+):(\d+)", route, text)
    out: list[str] = []
    blocks: list[str] = []
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        match = _KEY.match(code)
        where = tuple(blocks)
        if match and not code.rstrip().endswith(("{", "[")):
            indent, key, _sep, _value = match.groups()
            target = None
            if where == () and key in ("port", "listen"):
                target = ("client", "host: 127.0.0.1\n" + indent + "port: {}", container_ports.client)
            elif where == () and key in ("http", "http_port", "monitor_port"):
                target = ("monitor", "http: 127.0.0.1:{}", container_ports.monitor)
            elif where == ("cluster",) and key in ("port", "listen"):
                target = ("cluster", "host: 127.0.0.1\n" + indent + "port: {}", container_ports.cluster)
            if target is not None:
                rewrote.add(target[0])
                line = indent + target[1].format(lookup("", target[2]))
        opened = re.match(r"^\s*([A-Za-z_]+)\s*[:=]?\s*\{", code)
        for i in range(code.count("{")):
            blocks.append(opened.group(1) if opened and i == 0 else "")
        for _ in range(code.count("}")):
            if blocks:
                blocks.pop()
        out.append(line)
    return "\n".join(out) + "\n", rewrote
