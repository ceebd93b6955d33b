"""Sinks are discovered through the ``relaydesk.sinks`` entry-point group.

A package adds a sink by declaring, in its pyproject.toml::

    [project.entry-points."relaydesk.sinks"]
    jira = "relaydesk_jira.sink:JiraSink"

after which ``relaydesk sink jira`` runs it and ``relaydesk up`` runs it when ``[sinks.jira]``
is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .base import Sink
from .errors import SinkNotFound

GROUP = "relaydesk.sinks"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every installed sink, sorted."""
    return sorted(_entry_points())


def load(name: str) -> type[Sink]:
    """The sink class registered under ``name``; ``SinkNotFound`` if none."""
    ep = _entry_points().get(name)
    if ep is None:
        raise SinkNotFound(f"no sink named {name!r}; installed: {', '.join(available()) or 'none'}")
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise SinkNotFound(f"entry point {name!r} ({ep.value}) is not a Sink subclass")
    return cls


def table_problems(tables: Mapping[str, Any]) -> list[str]:
    """Each ``[sinks.<name>]`` table checked against its installed sink's settings: unknown
    sinks, unknown keys (with the closest known one) and wrong types, as ``relaydesk config
    check`` reports them. (Missing secrets are the sink's to report when it starts: they may
    come from the environment of another machine.)"""
    from services import config_strict as strict

    installed = available()
    problems: list[str] = []
    for name, table in tables.items():
        if name not in installed:
            hint = strict.did_you_mean(name, installed)
            problems.append(f"[sinks.{name}] no installed sink named {name!r}{hint}; installed: {', '.join(installed)}")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"[sinks.{name}] must be a table")
            continue
        problems += strict.settings_problems(table, load(name).Settings, ["sinks", name])
    return problems
