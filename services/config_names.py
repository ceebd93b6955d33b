"""The names a configuration uses checked against the names it knows (services/config.py runs
these when it loads): skills and languages against ``[routing]``, each with the closest known
name; agents' voice endpoints; and channel names that look like a misspelt known channel.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.model import CHANNELS
from services import config_strict as strict
from services.config import Config


def registry_problems(config: Config) -> list[str]:
    """Skill and language names in ``[intake]`` and ``[[agents]]`` that ``[routing]`` does not
    list, each naming its key with the closest known name."""
    skills, languages = config.routing.skills, config.routing.known_languages(config.intake)
    # (where, kind, names); intake's own languages are the registry's unless [routing] lists its own.
    intake_languages = (*config.intake.languages, config.intake.default_language) if config.routing.languages else ()
    named: list[tuple[str, str, tuple[str, ...]]] = [
        ("[intake] languages", "language", intake_languages),
        ("[intake] default_skills", "skill", tuple(config.intake.default_skills)),
        *((f"[[intake.rules]] #{i} skills", "skill", tuple(r.skills)) for i, r in enumerate(config.intake.rules, 1)),
        *((f"[[agents]] #{i} skills", "skill", tuple(a.skills)) for i, a in enumerate(config.agents, 1)),
        *((f"[[agents]] #{i} languages", "language", tuple(a.languages)) for i, a in enumerate(config.agents, 1)),
    ]
    from services.api.agents import voice_endpoint_problem  # here: the API imports this module

    problems = [
        f"[[agents]] #{i} voice: {problem}"
        for i, a in enumerate(config.agents, 1)
        if a.voice and (problem := voice_endpoint_problem(a.voice))
    ]
    problems += channel_typos(config)
    for where, kind, names in named:
        known = skills if kind == "skill" else languages
        for name in dict.fromkeys(names):
            if name not in known:
                problems.append(
                    f"{where}: unknown {kind} {name!r}{strict.did_you_mean(name, known)}"
                    f" (add it to [routing] {kind}s to use it)"
                )
    return problems


BUILT_IN_CHANNELS = (*CHANNELS, "voice")


def served_channels(config: Config) -> tuple[str, ...]:
    """The channels something serves: built in, an installed connector's (its class names the
    channel, which may differ from its name), a ``[connectors.<name>]`` table's."""
    from connectors.sdk import registry  # here: loading the config stays free of the SDK otherwise

    return tuple(dict.fromkeys((*BUILT_IN_CHANNELS, *registry.channels(config.connectors).values())))


def named_channels(config: Config) -> list[tuple[str, Iterable[str]]]:
    """(where, the channel names there) for every setting that names channels."""
    policy = config.router
    return [
        ("[router] sla_seconds", policy.sla_seconds),
        ("[router] wrap_up_seconds", policy.wrap_up_seconds),
        ("[router] offer_channels", policy.offer_channels),
        ("[router] release_on_offline", policy.release_on_offline),
        ("[router] exclusive_channels", policy.exclusive_channels),
        *((f"[[agents]] #{i} capacity", a.capacity) for i, a in enumerate(config.agents, 1)),
        *((f"[[intake.rules]] #{i} channels", r.channels) for i, r in enumerate(config.intake.rules, 1)),
    ]


def channel_typos(config: Config) -> list[str]:
    """Channel names that look like a misspelt known one (``capacity = { smss = 3 }``). Any
    other name is taken as a channel of its own (a connector made with the SDK may run from
    another config), so only a near miss of a channel something serves is refused."""
    from connectors.sdk.errors import ConnectorNotFound

    try:
        known = set(served_channels(config))
    except ConnectorNotFound as err:  # an installed plug-in that cannot be used: every command says why
        return [f"installed connectors: {err}"]
    problems: list[str] = []
    for where, names in named_channels(config):
        for name in dict.fromkeys(names):
            hint = "" if name in known else strict.did_you_mean(name, known)
            if hint:
                problems.append(f"{where}: unknown channel {name!r}{hint}")
    return problems
