"""Connectors are discovered through the ``relaydesk.connectors`` entry-point group.

A package adds a connector by declaring, in its pyproject.toml::

    [project.entry-points."relaydesk.connectors"]
    telegram = "relaydesk_telegram.connector:TelegramConnector"

after which ``relaydesk connector telegram`` can run it. ``load`` refuses, naming the package
and what to do, an entry point that cannot be imported, a name two packages register (a
plug-in taking a built-in's name: which one ran depended on the order of site-packages), a
class whose ``name`` is not its entry point's, and a name or channel that is not a channel
name (``events.model.CHANNEL_PATTERN``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from events.model import CHANNEL_PATTERN

from .base import Connector
from .errors import ConnectorNotFound

GROUP = "relaydesk.connectors"
_NAME = re.compile(CHANNEL_PATTERN)


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):  # one package seen twice on the path
            same.append(ep)
    return found


def _package(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"package {dist.name} {dist.version}" if dist is not None else "an unknown package"


def available() -> list[str]:
    """Names of every installed connector, sorted."""
    return sorted(_entry_points())


def name_problem(kind: str, value: object) -> str | None:
    """Why ``value`` cannot be a connector's ``name`` or ``channel`` (None: it can). Both name
    NATS subjects (``rd.inbound.<channel>``), durables and users (``connector_<name>``) and
    config tables: a dot or an uppercase letter made a subject no stream takes."""
    if isinstance(value, str) and _NAME.match(value):
        return None
    rule = "a lowercase letter, then lowercase letters, digits, _; at most 32"
    return f"{kind} {value!r} is not a channel name ({rule})"


def load(name: str) -> type[Connector]:
    """The connector class registered under ``name``; ``ConnectorNotFound`` (with the reason
    and what to do) if none, or if it cannot be used."""
    eps = _entry_points().get(name)
    if not eps:
        raise ConnectorNotFound(f"no connector named {name!r}; installed: {', '.join(available()) or 'none'}")
    if len(eps) > 1:
        who = "; ".join(f"{ep.value} ({_package(ep)})" for ep in eps)
        raise ConnectorNotFound(
            f"connector name {name!r} is registered by more than one package: {who}. Names are unique"
            " (a plug-in cannot take a built-in's): rename your entry point and your class's `name`"
        )
    [ep] = eps
    where = f"entry point {name!r} = {ep.value!r} ({_package(ep)})"
    try:
        cls = ep.load()
    except Exception as err:  # ImportError, or whatever the plug-in's module raised on import
        raise ConnectorNotFound(
            f"{where} cannot be loaded: {type(err).__name__}: {err}. Fix the package and reinstall it"
            f" (pip install -e <its directory>), or remove it (pip uninstall {ep.dist.name if ep.dist else '<it>'})"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorNotFound(f"{where} is not a Connector subclass")
    own = getattr(cls, "name", None)
    if own != name:
        raise ConnectorNotFound(
            f"{where}: the class's name is {own!r}; set `name: ClassVar[str] = {name!r}` (a connector is"
            " configured, run and given its NATS user under its entry point's name)"
        )
    for kind, value in (("name", name), ("channel", getattr(cls, "channel", None))):
        if problem := name_problem(kind, value):
            raise ConnectorNotFound(f"{where}: {problem}")
    return cls


def channels(named: Iterable[str] = ()) -> dict[str, str]:
    """Connector name -> the channel it serves, for every installed connector (its class says:
    ``whatsapp_cloud`` may serve ``whatsapp``) and every one ``named`` that is not installed
    here (a config's ``[connectors.<name>]`` table for a connector run elsewhere), which is
    taken to serve the channel of its name."""
    installed = set(available())
    return {name: str(load(name).channel) if name in installed else name for name in sorted(installed | set(named))}


def notice_channels(notice: str = "resolved") -> frozenset[str]:
    """The channels of every installed connector whose ``notices`` holds ``notice``: where
    the API sends it (``services.api.closings``). A connector must be installed where the API
    runs for its channel to get notices."""
    return frozenset(str(cls.channel) for cls in map(load, available()) if notice in cls.notices)
