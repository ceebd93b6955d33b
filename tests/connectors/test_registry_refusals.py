"""A plug-in connector that cannot be used is refused at start with the reason and what to do,
by every command (they all load the config, which asks the registry for the channels served),
instead of a traceback from deep in importlib or, for a name a built-in has, whichever of the
two site-packages listed last (found by an integrator following connectors/README.md)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors.sdk import ConnectorConfigError, ConnectorNotFound, ConnectorRuntime, registry
from services.config import check
from services.config_command import check_command
from tests.connectors.example_telegram.connector import TelegramConnector

EXAMPLE = "tests.connectors.example_telegram.connector:TelegramConnector"


class AcmeDotted(TelegramConnector):
    name: ClassVar[str] = "acme"
    channel: ClassVar[Any] = "acme.chat"


def installed(monkeypatch: pytest.MonkeyPatch, **eps: str) -> None:
    extra = [EntryPoint(name, value, registry.GROUP) for name, value in eps.items()]
    monkeypatch.setattr(registry, "entry_points", lambda *, group: [*entry_points(group=group), *extra])


def test_an_entry_point_that_cannot_be_imported_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, acme="acme_missing.connector:AcmeConnector")
    said = r"entry point 'acme' = 'acme_missing.connector:AcmeConnector' .* cannot be loaded: ModuleNotFoundError"
    with pytest.raises(ConnectorNotFound, match=said + r".*reinstall it .* or remove it"):
        registry.load("acme")
    _, problems = check(None, env={})  # what every command runs first: a problem, not a traceback
    assert len(problems) == 1 and "No module named 'acme_missing'" in problems[0], problems


def test_a_plug_in_cannot_take_a_built_in_connectors_name(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, sms=EXAMPLE)
    with pytest.raises(ConnectorNotFound, match=r"connector name 'sms' is registered by more than one package"):
        registry.load("sms")
    _, problems = check(None, env={})
    assert len(problems) == 1 and "rename your entry point" in problems[0], problems


def test_a_class_whose_name_is_not_its_entry_points_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, acme=EXAMPLE)  # its class says name = "telegram": its durable, its user, its table
    with pytest.raises(
        ConnectorNotFound, match=r"the class's name is 'telegram'; set `name: ClassVar\[str\] = 'acme'`"
    ):
        registry.load("acme")


def test_a_channel_that_is_no_channel_name_is_refused_at_load_and_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, acme=f"{__name__}:AcmeDotted")
    with pytest.raises(ConnectorNotFound, match=r"channel 'acme.chat' is not a channel name"):
        registry.load("acme")
    connector = AcmeDotted.from_config({"secret_token": "s"})
    with pytest.raises(ConnectorConfigError, match=r"AcmeDotted: channel 'acme.chat' is not a channel name"):
        ConnectorRuntime(connector, nc=None)  # type: ignore[arg-type]  # refused before NATS is used


def test_an_unknown_setting_of_a_plug_in_is_named_by_config_check_and_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed(monkeypatch, telegram=EXAMPLE)
    path = tmp_path / "relaydesk.toml"
    path.write_text('[connectors.telegram]\nsecret_tokn = "x"\n')
    assert check_command(str(path), env={}) == 1
    assert "[connectors.telegram] unknown key 'secret_tokn' (did you mean 'secret_token'?)" in capsys.readouterr().err
    with pytest.raises(ConnectorConfigError, match=r"unknown key 'secret_tokn' \(did you mean 'secret_token'\?\)"):
        registry.load("telegram").from_config({"secret_tokn": "x"})
