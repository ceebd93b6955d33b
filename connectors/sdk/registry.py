"""Connectors are discovered through the ``relaydesk.connectors`` entry-point group.

A package adds a connector by declaring, in its pyproject.toml::

    [project.entry-points."relaydesk.connectors"]
    telegram = "relaydesk_telegram.connector:TelegramConnector"

after which ``relaydesk connector telegram`` can run it.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from .base import Connector
from .errors import ConnectorNotFound

GROUP = "relaydesk.connectors"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every installed connector, sorted."""
    return sorted(_entry_points())


def load(name: str) -> type[Connector]:
    """The connector class registered under ``name``; ``ConnectorNotFound`` if none."""
    ep = _entry_points().get(name)
    if ep is None:
        raise ConnectorNotFound(f"no connector named {name!r}; installed: {', '.join(available()) or 'none'}")
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorNotFound(f"entry point {name!r} ({ep.value}) is not a Connector subclass")
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
