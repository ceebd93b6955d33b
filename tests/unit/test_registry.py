"""The registry of skills and languages (``[routing]``): the configuration refuses names it
does not list, naming the key and the closest known name; partial profile changes keep what
they do not name (``AgentChanges.applied_to``, checked over many generated changes)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import UNSET

from connectors.sdk import registry as sdk_registry
from events.model import DEFAULT_CAPACITY, AgentProfile, Channel
from services.api.agents import AgentChanges
from services.api.attachment_limits import limits_for
from services.api.common import ApiDeps
from services.api.registry import Registry, channel_connectors, known_channels
from services.config import ConfigError, load
from services.identity.addresses import IdentityRules
from tests.connectors.example_telegram.connector import TelegramConnector

ADD_SKILL = " (add it to [routing] skills to use it)"
ADD_LANGUAGE = " (add it to [routing] languages to use it)"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_configuration_uses_only_registered_names() -> None:
    config = load(env={})
    registry = Registry.from_config(config)
    assert registry.skills == ("general", "billing", "technical")
    assert registry.languages == ("en", "es", "fr", "de", "pt", "it")
    assert registry == Registry()


def test_unknown_skills_in_rules_and_agents_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[intake.rules]]
pattern = "refund"
skills = { biling = 2 }

[[agents]]
id = "ava"
skills = { billing = 3, shiping = 1 }
languages = { en = 5, esp = 2 }
""",
    )
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == [
        "[[intake.rules]] #1 skills: unknown skill 'biling' (did you mean 'billing'?)" + ADD_SKILL,
        "[[agents]] #1 skills: unknown skill 'shiping'" + ADD_SKILL,
        "[[agents]] #1 languages: unknown language 'esp' (did you mean 'es'?)" + ADD_LANGUAGE,
    ]


def test_an_agents_voice_endpoint_in_the_config_is_checked_and_seeded(tmp_path: Path) -> None:
    bad = write(tmp_path, '[[agents]]\nid = "ava"\nvoice = "ava-desk"\n')
    with pytest.raises(ConfigError) as caught:
        load(bad, env={})
    assert [p.split(":")[0] for p in caught.value.problems] == ["[[agents]] #1 voice"]
    good = write(tmp_path, '[[agents]]\nid = "ava"\nvoice = "sip:ava@pbx.example.com"\n')
    assert load(good, env={}).agents[0].profile().voice == "sip:ava@pbx.example.com"


def test_routing_lists_more_skills_and_its_own_languages(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[routing]
skills = ["general", "billing", "technical", "shipping"]
languages = ["en", "nl"]

[intake]
languages = ["en", "nl"]

[[agents]]
id = "ava"
skills = { shipping = 3 }
languages = { nl = 5 }
""",
    )
    registry = Registry.from_config(load(path, env={}))
    assert registry.languages == ("en", "nl") and "shipping" in registry.skills
    # Then intake may detect only languages the registry lists.
    path = write(tmp_path, '[routing]\nlanguages = ["en"]\n\n[intake]\nlanguages = ["en", "de"]\n')
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == [
        "[intake] languages: unknown language 'de'" + ADD_LANGUAGE,
        "[[agents]] #2 languages: unknown language 'es'" + ADD_LANGUAGE,
    ]


def test_a_refusal_names_every_unknown_name_once() -> None:
    refusal = Registry().unknown_skills(["biling", "billing", "zzz", "biling"])
    assert refusal is not None
    assert refusal.reason == (
        "unknown skills 'biling' (did you mean 'billing'?), 'zzz': "
        "known skills are general, billing, technical (see [routing] skills)"
    )
    assert Registry().unknown_languages(["en", "de"]) is None


LEVELS = st.dictionaries(st.sampled_from(["general", "billing", "technical"]), st.integers(1, 5))
CAPACITY = st.dictionaries(st.sampled_from(["chat", "sms", "email", "social", "telegram"]), st.integers(0, 9))
PROFILES = st.builds(
    AgentProfile,
    name=st.text(max_size=5),
    skills=LEVELS,
    languages=st.dictionaries(st.sampled_from(["en", "es", "de"]), st.integers(1, 5)),
    tier=st.integers(1, 3),
    capacity=CAPACITY.map(lambda c: {**DEFAULT_CAPACITY, **c}),
    max_total=st.none() | st.integers(0, 9),
)
CHANGES = st.builds(
    AgentChanges,
    name=st.just(UNSET) | st.text(max_size=5),
    skills=st.just(UNSET) | LEVELS,
    languages=st.just(UNSET) | st.dictionaries(st.sampled_from(["en", "fr"]), st.integers(1, 5)),
    tier=st.just(UNSET) | st.integers(1, 3),
    capacity=st.just(UNSET) | CAPACITY,
    max_total=st.just(UNSET) | st.none() | st.integers(0, 9),
)


@given(PROFILES, CHANGES)
def test_a_change_keeps_every_field_it_does_not_name(current: AgentProfile, change: AgentChanges) -> None:
    after = change.applied_to(current)
    named = change.named()
    for field in AgentProfile.__struct_fields__:
        if field == "capacity":
            # Per channel: the channels named change, the others keep theirs.
            assert after.capacity == {**current.capacity, **named.get("capacity", {})}
        elif field in named:
            assert getattr(after, field) == named[field]
        else:
            assert getattr(after, field) == getattr(current, field)


def test_known_channels_are_the_built_in_ones_and_those_the_configuration_names(tmp_path: Path) -> None:
    assert Registry().channels == ("sms", "email", "chat", "social", "voice")
    path = write(
        tmp_path,
        """
[router]
sla_seconds = { line = 600 }

[connectors.telegram]
port = 9100

[[agents]]
id = "ava"
capacity = { kakao = 2 }
""",
    )
    registry = Registry.from_config(load(path, env={}))
    assert registry.channels == ("sms", "email", "chat", "social", "voice", "telegram", "line", "kakao")
    assert registry.unknown_channels(["telegram", "sms"]) is None
    refusal = registry.unknown_channels(["telegran", "nochannel"])
    assert refusal is not None and refusal.extra("channel") == {"known_channels": list(registry.channels)}
    assert refusal.reason.startswith(
        "unknown channels 'telegran' (did you mean 'telegram'?), 'nochannel': known channels are sms, email,"
    )


class WhatsAppCloud(TelegramConnector):
    """A plug-in whose name is not its channel: ``whatsapp_cloud`` serves ``whatsapp``."""

    name: ClassVar[str] = "whatsapp_cloud"
    channel: ClassVar[Channel] = "whatsapp"


def test_a_plugin_serves_the_channel_its_class_names_not_its_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an integrator: with ``name = "whatsapp_cloud"`` and ``channel = "whatsapp"``,
    ``capacity = { whatsapp = 3 }`` was refused (did you mean 'whatsapp_cloud'?), so no agent
    could ever take the channel, and its table's attachment limits were never found."""
    ep = EntryPoint("whatsapp_cloud", f"{__name__}:WhatsAppCloud", sdk_registry.GROUP)
    monkeypatch.setattr(sdk_registry, "entry_points", lambda *, group: [*entry_points(group=group), ep])
    path = write(
        tmp_path,
        """
[router]
sla_seconds = { whatsapp = 300 }

[connectors.whatsapp_cloud]
max_attachment_bytes = 1000

[[agents]]
id = "ava"
capacity = { whatsapp = 3 }
""",
    )
    config = load(path, env={})
    registry = Registry.from_config(config)
    assert "whatsapp" in registry.channels and "whatsapp_cloud" not in registry.channels
    assert registry.unknown_channels(["whatsapp"]) is None
    deps = ApiDeps(
        nc=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        live=None,  # type: ignore[arg-type]
        timelines=None,
        directory=None,  # type: ignore[arg-type]
        token="t",
        connectors=config.connectors,
        channel_connectors=channel_connectors(config),
    )
    assert limits_for(deps, "whatsapp").max_bytes == 1000
    assert IdentityRules.from_settings(config.intake, channels=known_channels(config)).kinds >= {"whatsapp"}
