"""Where configuration pieces meet: connector names with ``_`` in environment variables, and
per-channel tables ([router] sla_seconds, [[agents]] capacity) merged over the defaults."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import ClassVar

import pytest

from connectors.sdk import registry
from events.model import DEFAULT_CAPACITY
from router.policy import RouterPolicy
from services.config import check, load
from services.config_strict import split_name_and_key
from tests.connectors.example_telegram.connector import TelegramConnector


class MyChan(TelegramConnector):
    name: ClassVar[str] = "my_chan"  # a class's name is its entry point's (connectors.sdk.registry)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(text)
    return path


@pytest.fixture
def my_chan_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in connector named ``my_chan`` installed (its entry point), no table in the file."""
    ep = EntryPoint("my_chan", f"{__name__}:MyChan", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda *, group: [*entry_points(group=group), ep])


def test_a_connector_name_with_an_underscore_is_split_from_its_key_by_its_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[connectors.my_chan]\nport = 9000\n")
    env = {"RELAYDESK_CONNECTOR_MY_CHAN_API_KEY": "k", "RELAYDESK_CONNECTOR_MY_CHAN_PORT": "9001"}
    config = load(path, env=env)
    assert config.connectors["my_chan"] == {"port": "9001", "api_key": "k"}
    assert "my" not in config.connectors


def test_an_installed_connector_needs_no_table_to_be_named(tmp_path: Path, my_chan_installed: None) -> None:
    config = load(None, env={"RELAYDESK_CONNECTOR_MY_CHAN_BOT_TOKEN": "1:x", "RELAYDESK_CONNECTOR_SMS_PORT": "9002"})
    assert config.connectors["my_chan"] == {"bot_token": "1:x"}
    assert config.connectors["sms"] == {"port": "9002"}


def test_the_longest_known_name_wins() -> None:
    assert split_name_and_key("MY_CHAN_PORT", ["my", "my_chan"]) == ("my_chan", "port")
    assert split_name_and_key("MY_PORT", ["my", "my_chan"]) == ("my", "port")
    assert split_name_and_key("MY_CHAN", ["my", "my_chan"]) == ("my", "chan")  # my_chan needs a key
    assert split_name_and_key("SMS_AUTH_TOKEN", ["sms"]) == ("sms", "auth_token")
    assert split_name_and_key("NOBODY_KNOWS_ME", []) == ("nobody", "knows_me")  # first "_", as before


def test_a_sink_name_with_an_underscore_too(tmp_path: Path) -> None:
    path = write(tmp_path, "[sinks.help_scout]\nbase_url = 'https://x'\n")
    config = load(path, env={"RELAYDESK_SINK_HELP_SCOUT_API_TOKEN": "t"})
    assert config.sinks["help_scout"] == {"base_url": "https://x", "api_token": "t"}


def test_a_problem_in_such_a_variable_names_it(tmp_path: Path) -> None:
    _, problems = check(None, env={"RELAYDESK_CONNECTOR_SMS": "x"})
    assert problems and "RELAYDESK_CONNECTOR_SMS" in problems[0]


def test_sla_seconds_merges_per_channel_like_capacity(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[router]
sla_seconds = { telegram = 300, chat = 30, email = inf }

[[agents]]
id = "ava"
capacity = { telegram = 3, sms = 1 }
""",
    )
    config = load(path, env={})
    defaults = RouterPolicy().sla_seconds
    assert config.router.sla_seconds == {
        **{c: s for c, s in defaults.items() if c != "email"},  # inf: no SLA on email
        "chat": 30.0,
        "telegram": 300.0,
    }
    [ava] = config.agents
    assert ava.profile().capacity == {**DEFAULT_CAPACITY, "telegram": 3, "sms": 1}


def test_an_empty_router_table_is_the_shipped_policy() -> None:
    assert RouterPolicy().sla_seconds["chat"] == 60.0
    assert RouterPolicy(sla_seconds={}).sla_seconds == RouterPolicy().sla_seconds
