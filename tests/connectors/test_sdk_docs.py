"""connectors/README.md says what the code does: its code blocks are the Telegram example's
files, its TOML passes `relaydesk config check`, and what it promises about running a
plug-in connector and about ``DeliverReply.metadata`` holds."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from connectors.sdk import ProviderRequest, msg_id, registry
from events.model import DEFAULT_CAPACITY, ConversationOpened, MessageReceived, ReplyRequested
from router.policy import RouterPolicy
from services.api.reply_routing import deliver_command, route_of
from services.config import check, load
from services.config_command import check_command
from services.intake.customer_history import fold_history
from services.intake.plan import Triage, plan
from services.up import connector_channels, enabled_connectors, with_built_in_connectors

from .example_telegram.connector import SECRET_HEADER, TelegramConnector
from .example_telegram.test_conformance import BOT_TOKEN, SECRET, update

README = Path(__file__).resolve().parents[2] / "connectors" / "README.md"
EXAMPLE = Path(__file__).resolve().parent / "example_telegram"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def source_without_docstring(path: Path) -> str:
    text = path.read_text()
    return text[text.index("from __future__") :]


@pytest.fixture
def telegram_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint("telegram", "tests.connectors.example_telegram.connector:TelegramConnector", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda *, group: [*entry_points(group=group), ep])


# The example's test imports its connector from the package beside it; in an integrator's own
# package (connectors/README.md §2) the test sits in tests/ and imports the installed package.
IN_THE_EXAMPLE, IN_A_PACKAGE = "from .connector import", "from relaydesk_telegram.connector import"


def test_the_readmes_python_is_the_example_code() -> None:
    files = {
        path.name: source_without_docstring(path).replace(IN_THE_EXAMPLE, IN_A_PACKAGE)
        for path in EXAMPLE.glob("*.py")
        if path.name != "__init__.py"
    }
    whole = [block for block in blocks("python") if block.startswith("from __future__")]
    assert whole == [files["connector.py"], files["test_conformance.py"]], (
        "connectors/README.md must show these files verbatim (from `from __future__` on): copy them in"
    )
    for block in blocks("python"):
        ast.parse(block)  # the fragments too: no pseudo-code


def telegram_request(body: bytes) -> ProviderRequest:
    headers = CIMultiDictProxy(CIMultiDict({SECRET_HEADER: SECRET, "Content-Type": "application/json"}))
    return ProviderRequest("POST", "https", "bot.example", "/telegram/webhook", headers, body)


def test_the_example_dedupe_id_has_the_channel_once() -> None:
    connector = TelegramConnector.from_config({"bot_token": BOT_TOKEN, "secret_token": SECRET})
    request = telegram_request(update(update_id=1001))
    connector.verify(request)
    [message] = connector.parse(request)
    assert msg_id(message) == "telegram:123456:1001"  # not telegram:telegram:…
    assert (message.sender, message.metadata["chat_id"]) == ("42", "42")


def test_deliver_reply_metadata_is_the_last_messages_metadata() -> None:
    """What the README's table says: contact, thread_ref and metadata of the last customer
    message, plus sender_name and last_customer_message_at."""
    connector = TelegramConnector.from_config({"bot_token": BOT_TOKEN, "secret_token": SECRET})
    [first] = connector.parse(telegram_request(update(update_id=1, text="hi")))
    [second] = connector.parse(telegram_request(update(update_id=2, text="still there?")))
    triage = Triage(identity="telegram:42", language="en", skills={}, priority=0)
    now = datetime.now(UTC)  # after the messages arrived (dated self.now()): intake keeps their time
    events = plan(fold_history([]), "cus_1", first, triage, now)
    [opened] = [e for e in events if isinstance(e, ConversationOpened)]
    later = plan(fold_history([]), "cus_1", second, triage, now)
    [last] = [
        msgspec.structs.replace(e, conversation_id=opened.conversation_id)
        for e in later
        if isinstance(e, MessageReceived)
    ]
    reply = ReplyRequested(
        at=now,
        customer_id="cus_1",
        conversation_id=opened.conversation_id,
        reply_id="rep_1",
        channel="telegram",
        text="yes",
        agent_id="ava",
    )
    deliver = deliver_command(reply, route_of(opened, last))
    assert (deliver.channel, deliver.contact, deliver.thread_ref) == ("telegram", "42", "123456:2")
    assert deliver.metadata == {
        **second.metadata,
        "sender_name": "Ada",
        "last_customer_message_at": second.at.isoformat(),
    }


def readme_config(tmp_path: Path) -> Path:
    [toml] = [block for block in blocks("toml") if "[[agents]]" in block]
    path = tmp_path / "relaydesk.toml"
    path.write_text(toml)
    return path


def test_the_readmes_agents_snippet_passes_config_check_and_replaces_the_demo_roster(
    tmp_path: Path, telegram_installed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = readme_config(tmp_path)
    assert check_command(str(path), env={}) == 0, capsys.readouterr().err
    config = load(path, env={})
    assert [agent.id for agent in config.agents] == ["ava", "sol"]  # no bruno, no chen
    ava, sol = (agent.profile() for agent in config.agents)
    assert ava.capacity == {**DEFAULT_CAPACITY, "telegram": 3}
    assert sol.capacity == {**DEFAULT_CAPACITY, "telegram": 2, "chat": 1}
    assert config.router.sla_seconds == {**RouterPolicy().sla_seconds, "telegram": 300.0}
    for block in blocks("toml"):
        msgspec.toml.decode(block.encode())


def test_a_near_miss_of_an_installed_connectors_channel_is_refused_without_its_table(
    tmp_path: Path, telegram_installed: None
) -> None:
    """Started from RELAYDESK_CONNECTOR_TELEGRAM_* alone, the channel has no table in the file:
    ``telegrm`` passed `config check` then, and the agents never got telegram work."""
    path = tmp_path / "relaydesk.toml"
    path.write_text('[[agents]]\nid = "ava"\ncapacity = { telegrm = 2 }\n')
    _, problems = check(path, env={})
    assert problems == ["[[agents]] #1 capacity: unknown channel 'telegrm' (did you mean 'telegram'?)"]


def test_relaydesk_up_runs_a_plug_in_connector_once_its_table_exists(tmp_path: Path, telegram_installed: None) -> None:
    """What `relaydesk up` starts (services.up.up: with_built_in_connectors, then serve_all over
    enabled_connectors with a NATS user per connector channel); serve_all running the Telegram
    connector for real is tests/connectors/example_telegram/test_own_channel.py."""

    def started(config_text: str | None, env: dict[str, str]) -> dict[str, str]:
        path = None
        if config_text is not None:
            path = tmp_path / "relaydesk.toml"
            path.write_text(config_text)
        config = with_built_in_connectors(load(path, env=env), tmp_path)
        return connector_channels(enabled_connectors(config))

    assert "telegram" not in started(None, {})  # installed, not configured: not started
    assert started("[connectors.telegram]\n", {})["telegram"] == "telegram"  # an empty table is enough
    assert started(None, {"RELAYDESK_CONNECTOR_TELEGRAM_BOT_TOKEN": "1:x"})["telegram"] == "telegram"
    assert "telegram" not in started("[connectors.telegram]\nenabled = false\n", {})
    assert started(str(readme_config(tmp_path).read_text()), {})["telegram"] == "telegram"
