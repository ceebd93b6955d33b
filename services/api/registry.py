"""The registry of skills and languages routing knows (``[routing] skills`` and ``languages``),
and of the channels agents may be given capacity on.

``GET /v1/skills`` and ``GET /v1/languages`` list them, so the console can offer lists
instead of free text. An agent profile (``PUT``/``PATCH /v1/agents/{id}``) or a transfer
(``to_skill``) that names another is refused with 400 naming it, with the closest known name:
a skill nobody spells the same way would leave work unroutable in silence. The configuration's
own names (routing rules, ``[[agents]]``) are checked at start (``services.config_names.registry_problems``).

Channels are open (``events.model.CHANNEL_PATTERN``: a connector package brings its own), so the
known ones are the built-in ones (``services.config_names.BUILT_IN_CHANNELS``), those of the
connectors installed (``connectors.sdk.registry``), each ``[connectors.<name>]`` table and every
channel the ``[router]`` settings or ``[[agents]]`` capacities name (what the configuration
takes as a channel of its own). A ``capacity`` in a body naming another is refused the same
way as a skill.

This module imports nothing from ``services.api.common`` so that ``ApiDeps`` can hold a
``Registry``; its routes answer with plain aiohttp JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from services.config import Config, IntakeSettings, RoutingSettings
from services.config_names import BUILT_IN_CHANNELS, named_channels, served_channels
from services.config_strict import did_you_mean

if TYPE_CHECKING:
    from services.api.common import ApiDeps


@dataclass(frozen=True)
class Refusal:
    """Why names were refused: a sentence for a person and the known names for a program."""

    reason: str
    known: tuple[str, ...]

    def extra(self, kind: str) -> dict[str, Any]:
        return {f"known_{kind}s": list(self.known)}


def known_channels(config: Config) -> tuple[str, ...]:
    """The channels something serves, then every one the configuration names (see the
    module's docstring)."""
    named = (name for _, names in named_channels(config) for name in names)
    return tuple(dict.fromkeys((*served_channels(config), *named)))


def channel_connectors(config: Config) -> dict[str, str]:
    """Channel -> the configured connector serving it, where the two names differ (see
    ``ApiDeps.connector_table``)."""
    from connectors.sdk import registry  # here: the API's import stays free of the SDK otherwise

    served = registry.channels(config.connectors)
    return {channel: name for name, channel in served.items() if name != channel and name in config.connectors}


def notice_channels() -> frozenset[str]:
    """The channels whose installed connector shows a ``resolved`` notice (``Connector.notices``):
    where ``services.api.closings`` sends one."""
    from connectors.sdk import registry

    return registry.notice_channels("resolved")


# Where the refusal tells a person to look, per kind of name.
WHERE = {
    "skill": "see [routing] skills",
    "language": "see [routing] languages",
    "channel": (
        "a connector's channel is known once it is installed, or [connectors.<name>] or [router] sla_seconds names it"
    ),
}


@dataclass(frozen=True)
class Registry:
    skills: tuple[str, ...] = RoutingSettings().skills
    languages: tuple[str, ...] = RoutingSettings().known_languages(IntakeSettings())
    channels: tuple[str, ...] = BUILT_IN_CHANNELS

    @classmethod
    def from_config(cls, config: Config) -> Registry:
        return cls(
            skills=config.routing.skills,
            languages=config.routing.known_languages(config.intake),
            channels=known_channels(config),
        )

    def unknown_skills(self, names: Iterable[str]) -> Refusal | None:
        return _refusal("skill", names, self.skills)

    def unknown_languages(self, names: Iterable[str]) -> Refusal | None:
        return _refusal("language", names, self.languages)

    def unknown_channels(self, names: Iterable[str]) -> Refusal | None:
        return _refusal("channel", names, self.channels)


def _refusal(kind: str, names: Iterable[str], known: tuple[str, ...]) -> Refusal | None:
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if not unknown:
        return None
    each = ", ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    reason = f"unknown {kind}{plural} {each}: known {kind}s are {', '.join(known)} ({WHERE[kind]})"
    return Refusal(reason, known)


class SkillList(msgspec.Struct, kw_only=True):
    skills: list[str]


class LanguageList(msgspec.Struct, kw_only=True):
    languages: list[str]


def _json(data: msgspec.Struct) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/v1/skills")
    async def list_skills(request: web.Request) -> web.Response:
        return _json(SkillList(skills=list(deps.registry.skills)))

    @r.get("/v1/languages")
    async def list_languages(request: web.Request) -> web.Response:
        return _json(LanguageList(languages=list(deps.registry.languages)))

    return r
