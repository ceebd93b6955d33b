"""The configuration refuses mistakes: unknown keys anywhere, unknown RELAYDESK_* variables,
secrets from *_FILE, NATS URL lists, and the `relaydesk config` / `--version` commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import pytest

from connectors.sdk.errors import ConnectorConfigError
from connectors.sms.connector import TwilioSmsConnector
from services.bus.auth import server_list
from services.cli import build_parser, main
from services.config import ConfigError, check, load
from services.config_command import check_command, connector_problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_relaydesk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads the process environment: keep the developer's own RELAYDESK_* out."""
    import os

    for name in list(os.environ):
        if name.startswith("RELAYDESK_"):
            monkeypatch.delenv(name)


# -- unknown keys --------------------------------------------------------------------------


def test_a_typo_in_a_table_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[api]\nprot = 9000\n"), env={})
    assert str(caught.value) == "[api] unknown key 'prot' (did you mean 'port'?)"


def test_typos_in_nested_tables_and_arrays_of_tables_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[router]
offer_timeout_secs = 3
[router.customer_tiers.gold]
priority_bost = 3
[[agents]]
id = "ava"
[[agents]]
id = "bruno"
skils = { billing = 3 }
[[delivery.endpoints]]
kind = "webhook"
ulr = "http://example.com"
[[intake.rules]]
patern = "refund"
[apii]
port = 1
""",
    )
    config, problems = check(path, env={})
    assert config is None
    assert problems == [
        "[router] unknown key 'offer_timeout_secs' (did you mean 'offer_timeout_seconds'?)",
        "[router.customer_tiers.gold] unknown key 'priority_bost' (did you mean 'priority_boost'?)",
        "[[agents]] #2 unknown key 'skils' (did you mean 'skills'?)",
        "[[delivery.endpoints]] #1 unknown key 'ulr' (did you mean 'url'?)",
        "[[intake.rules]] #1 unknown key 'patern' (did you mean 'pattern'?)",
        "unknown table [apii] (did you mean [api]?)",
    ]


def test_a_wrong_type_names_the_table_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nport = "eighty"\n[[agents]]\nid = "ava"\ntier = "one"\n')
    _, problems = check(path, env={})
    assert problems == [
        "[api] port: expected `int`, got `str`",
        "[[agents]] #1 tier: expected `int`, got `str`",
    ]


def test_a_value_out_of_its_range_names_the_key_and_the_range(tmp_path: Path) -> None:
    """Found by an operator: a port of 70000, a negative SLA, an agent of tier 9 and a
    capacity for the channel "smss" all passed `config check` and failed later, or never."""
    path = write(
        tmp_path,
        """
[api]
port = 70000
[router]
sla_seconds = { sms = -5 }
[[agents]]
id = "ava"
tier = 9
[[agents]]
id = "bruno"
capacity = { smss = 3, telegram = 2 }
""",
    )
    _, problems = check(path, env={})
    assert problems == [
        "[api] port: expected `int` <= 65535",
        "[router] sla_seconds: each value: expected `float` > 0.0",
        "[[agents]] #1 tier: expected `int` <= 3",
    ]
    path = write(
        tmp_path,
        '[router]\nsla_seconds = { emial = 60 }\n[[agents]]\nid = "b"\ncapacity = { smss = 3 }\n'
        '[[intake.rules]]\nchannels = ["sms", "emial"]\nskills = { billing = 1 }\n',  # a rule that never matched
    )
    _, problems = check(path, env={})
    assert problems == [
        "[router] sla_seconds: unknown channel 'emial' (did you mean 'email'?)",
        "[[agents]] #1 capacity: unknown channel 'smss' (did you mean 'sms'?)",
        "[[intake.rules]] #1 channels: unknown channel 'emial' (did you mean 'email'?)",
    ]
    # A channel of its own (a connector made with the SDK) is not a typo.
    path = write(
        tmp_path, '[router]\nsla_seconds = { telegram = 60 }\n[[agents]]\nid = "b"\ncapacity = { telegram = 3 }\n'
    )
    assert load(path, env={}).agents[0].capacity == {"telegram": 3}


def test_the_shipped_defaults_and_a_full_file_still_load(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
[connectors.sms]
auth_token = "t"
[[intake.rules]]
recipients = ["billing@*"]
pattern = "refund"
skills = { billing = 2 }
[[agents]]
id = "ava"
capacity = { sms = 3 }
[router]
sla_seconds = { chat = 30 }
[router.customer_tiers.gold]
priority_boost = 3
[health]
port = 0
[tracing]
enabled = false
""",
        ),
        env={},
    )
    assert config.router.customer_tiers["gold"].priority_boost == 3
    assert load(env={}).api.port == 8080


def test_a_connector_table_is_checked_by_its_connector(tmp_path: Path) -> None:
    # A service start: the connector refuses its own table.
    with pytest.raises(ConnectorConfigError, match=r"\[connectors.sms\] unknown key 'prot' \(did you mean 'port'\?\)"):
        TwilioSmsConnector.from_config({"prot": 1})
    # `config check`: every connector table against the installed connectors.
    path = write(tmp_path, '[connectors.sms]\nauth_tokn = "x"\n[connectors.chat]\nport = "abc"\n[connectors.smss]\n')
    _, problems = check(path, env={}, connectors=connector_problems)
    assert problems == [
        "[connectors.sms] unknown key 'auth_tokn' (did you mean 'auth_token'?)",
        "[connectors.chat] port: expected `int`, got `str`",
        "[connectors.smss] no installed connector named 'smss' (did you mean 'sms'?); "
        "installed: chat, email, sms, social, voice",
    ]
    # Values out of range, in a connector that redeclares the setting too (chat's port). Found by
    # an integrator: ack_timeout = -1 answered every webhook 503, max_body_bytes = -5 every one 413.
    path = write(tmp_path, "[connectors.sms]\nack_timeout = -1\n[connectors.chat]\nport = 70000\n")
    _, problems = check(path, env={}, connectors=connector_problems)
    assert problems == [
        "[connectors.sms] ack_timeout must be at least 0.001, not -1.0",
        "[connectors.chat] port must be within 0..65535, not 70000",
    ]


# -- the environment -----------------------------------------------------------------------


def test_an_unknown_environment_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={"RELAYDESK_API_PROT": "9000"})
    assert str(caught.value) == "unknown environment variable RELAYDESK_API_PROT (did you mean RELAYDESK_API_PORT?)"
    _, problems = check(env={"RELAYDESK_APII_PORT": "1", "RELAYDESK_CONNECTOR_SMS": "x"})
    assert problems == [
        "unknown environment variable RELAYDESK_APII_PORT (did you mean RELAYDESK_API_PORT?)",
        "RELAYDESK_CONNECTOR_SMS: name a connector and a key, e.g. RELAYDESK_CONNECTOR_SMS_PORT",
    ]


def test_variables_that_are_not_configuration_are_let_through() -> None:
    env = {
        "RELAYDESK_LOG_LEVEL": "debug",
        "RELAYDESK_LOG_FORMAT": "json",
        "RELAYDESK_NATS_PASSWORD_TOOL": "pw",
        "RELAYDESK_NATS_PASSWORD_CONNECTOR_SMS": "pw",
        "RELAYDESK_TEST_PG_DSN": "postgresql://x@y/z",
        "RELAYDESK_API_PORT": "9000",
        "RELAYDESK_CONNECTOR_SMS_PORT": "9001",
        "RELAYDESK_TWILIO_AUTH_TOKEN": "tok",
    }
    config = load(env=env)
    assert config.api.port == 9000
    assert config.connectors["sms"] == {"port": "9001", "auth_token": "tok"}
    assert config.nats.password == ""  # a role's password is the NATS server's, not ours


def test_a_bad_value_from_the_environment_names_the_variable() -> None:
    _, problems = check(env={"RELAYDESK_API_PORT": "eighty"})
    assert problems == ["[api] port: expected `int`, got `str` (set by RELAYDESK_API_PORT)"]


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "nats").write_text("nats-pw\n")
    config = load(
        env={
            "RELAYDESK_API_TOKEN_FILE": str(tmp_path / "token"),
            "RELAYDESK_NATS_PASSWORD_FILE": str(tmp_path / "nats"),
            "RELAYDESK_TWILIO_AUTH_TOKEN_FILE": str(tmp_path / "token"),
        }
    )
    assert config.api.token == "s3cret-token"
    assert config.nats.password == "nats-pw"
    assert config.connectors["sms"]["auth_token"] == "s3cret-token"


def test_a_secret_file_that_is_missing_or_doubled_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"RELAYDESK_API_TOKEN_FILE: cannot read {missing}: No such file"):
        load(env={"RELAYDESK_API_TOKEN_FILE": str(missing)})
    (tmp_path / "token").write_text("x")
    _, problems = check(env={"RELAYDESK_API_TOKEN_FILE": str(tmp_path / "token"), "RELAYDESK_API_TOKEN": "y"})
    assert problems == ["RELAYDESK_API_TOKEN_FILE and RELAYDESK_API_TOKEN are both set: keep one"]


# -- NATS URL lists --------------------------------------------------------------------------


def test_server_list_splits_trims_and_refuses_bad_entries() -> None:
    assert server_list("nats://a:4222") == ["nats://a:4222"]
    assert server_list(" nats://a:4222 , tls://b:4222") == ["nats://a:4222", "tls://b:4222"]
    assert server_list(["nats://a:4222", " nats://b:4222"]) == ["nats://a:4222", "nats://b:4222"]
    assert server_list("a:4222") == ["nats://a:4222"]  # as nats.py reads a bare host:port
    with pytest.raises(ConfigError, match="empty entry"):
        server_list("nats://a:4222,,nats://b:4222")
    with pytest.raises(ConfigError, match="empty entry"):
        server_list("nats://a:4222,")
    with pytest.raises(ConfigError, match=r"'http://b:4222': the scheme must be one of nats://"):
        server_list("nats://a:4222,http://b:4222")
    with pytest.raises(ConfigError, match=r"'nats://a:port' is not a valid URL"):
        server_list("nats://a:port")
    with pytest.raises(ConfigError) as caught:
        server_list("ftp://user:secret@b:4222")
    assert "secret" not in str(caught.value)


def test_url_as_a_toml_list_or_a_comma_string(tmp_path: Path) -> None:
    listed = load(write(tmp_path, '[nats]\nurl = ["nats://a:4222", " nats://b:4222"]\n'), env={})
    joined = load(env={"RELAYDESK_NATS_URL": "nats://a:4222, nats://b:4222"})
    assert listed.nats.url == joined.nats.url == "nats://a:4222,nats://b:4222"
    _, problems = check(write(tmp_path, '[nats]\nurl = ["nats://a:4222", "http://b"]\n'), env={})
    assert problems == ["[nats] url 'http://b': the scheme must be one of nats://, tls://, ws://, wss://"]


# -- the commands ----------------------------------------------------------------------------


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "[api]\nport = 9001\n")
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"ok: {good}\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\nprot = 1\n[connectors.sms]\nauth_tokn = "x"\n')
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "[api] unknown key 'prot' (did you mean 'port'?)" in err
    assert "[connectors.sms] unknown key 'auth_tokn' (did you mean 'auth_token'?)" in err
    assert f"2 problems in {bad}" in err


def test_config_check_lists_bad_values_beside_unknown_keys_even_in_the_same_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: a range error showed only once the unknown keys were fixed."""
    bad = write(tmp_path, "[nats]\nreplicas = 9\nfoo = 1\n[api]\nbar = 2\nport = 99999\n[bogus]\nx = 1\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    for problem in (
        "[nats] unknown key 'foo'",
        "[api] unknown key 'bar'",
        "unknown table [bogus]",
        "[nats] replicas: expected `int` <= 5",
        "[api] port: expected `int` <= 65535",
        f"5 problems in {bad}",
    ):
        assert problem in err, err


def test_config_check_runs_each_connectors_own_start_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A connector that refuses to start with the file fails `config check` too; what only
    `relaydesk up` fills in (chat's widget key and session secret) is a warning."""
    short = tmp_path / "short.toml"
    short.write_text('[connectors.chat]\nwidget_key = "k"\nsession_secret = "short"\n')
    assert main(["config", "check", str(short)]) == 1
    assert "[connectors.chat] session_secret is required (at least 32 characters" in capsys.readouterr().err
    bare = tmp_path / "bare.toml"
    bare.write_text('[connectors.chat]\nallowed_origins = ["https://shop.example"]\n')
    assert main(["config", "check", str(bare)]) == 0
    assert "warning: [connectors.chat] widget_key is required" in capsys.readouterr().err


def test_config_check_includes_the_environment_unless_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "")
    monkeypatch.setenv("RELAYDESK_API_PROT", "1")
    assert main(["config", "check", str(good)]) == 1
    assert "RELAYDESK_API_PROT (did you mean RELAYDESK_API_PORT?)" in capsys.readouterr().err
    assert main(["config", "check", "--file-only", str(good)]) == 0


SECRETS = {
    "nats_password": "natspw-1",
    "url_password": "urlpw-2",
    "dsn_password": "dbpw-3",
    "api_token": "apitoken-4",
    "signing_key": "signkey-5",
    "twilio": "twilio-6",
    "chat_secret": "chatsecret-7-" + "x" * 32,
    "imap": "imappw-8",
    "smtp_auth": "authpw-9",
    "slack": "SLACKPATH10",
    "webhook": "whsec-11",
    "meta": "meta-12",
}


def test_config_show_masks_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = SECRETS
    path = write(
        tmp_path,
        f"""
[nats]
url = ["nats://relay:{s["url_password"]}@a:4222", "nats://b:4222"]
password = "{s["nats_password"]}"
[projection]
dsn = "postgresql://rd:{s["dsn_password"]}@db:5432/relaydesk"
[api]
signing_key = "{s["signing_key"]}"
[connectors.sms]
auth_token = "{s["twilio"]}"
[connectors.chat]
widget_key = "public-widget-key"
session_secret = "{s["chat_secret"]}"
[connectors.email]
imap_password = "{s["imap"]}"
auth_users = {{ bob = "{s["smtp_auth"]}" }}
[[delivery.endpoints]]
kind = "slack"
agent = "ava"
url = "https://hooks.slack.com/services/T0/B0/{s["slack"]}"
[[delivery.endpoints]]
kind = "webhook"
agent = "ava"
url = "https://example.com/hook"
secret = "{s["webhook"]}"
""",
    )
    (tmp_path / "token").write_text(s["api_token"] + "\n")
    monkeypatch.setenv("RELAYDESK_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("RELAYDESK_META_APP_SECRET", s["meta"])
    monkeypatch.setenv("RELAYDESK_API_PORT", "9123")
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for name, value in s.items():
        assert value not in out, name
    shown = msgspec.toml.decode(out.encode())
    assert shown["api"]["port"] == 9123  # the environment applied
    assert shown["api"]["token"] == shown["api"]["signing_key"] == "****"
    assert shown["nats"]["url"] == "nats://relay:****@a:4222,nats://b:4222"
    assert shown["projection"]["dsn"] == "postgresql://rd:****@db:5432/relaydesk"
    assert shown["connectors"]["chat"]["widget_key"] == "public-widget-key"  # public by design
    assert shown["connectors"]["email"]["auth_users"] == {"bob": "****"}
    assert shown["connectors"]["social"]["app_secret"] == "****"
    assert shown["delivery"]["endpoints"][0]["url"] == "https://hooks.slack.com/services/****"
    assert shown["nats"]["token"] == ""  # not set stays visibly empty
    # What it prints is a configuration again (with placeholders for the secrets).
    reread = tmp_path / "shown.toml"
    reread.write_text(out)
    again, original = load(reread, env={}), load(path)
    assert again.api.port == 9123
    for table in ("router", "agents", "intake", "runner", "health", "tracing", "security", "retention"):  # no secrets
        assert getattr(again, table) == getattr(original, table), table


def test_config_show_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", str(write(tmp_path, "[api]\nprot = 1\n"))]) == 1
    assert "relaydesk: [api] unknown key 'prot'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"relaydesk {version('relaydesk')}\n"


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((f"{prefix}{name}", child))
                found += _commands(child, f"{prefix}{name} ")
    return found


def test_every_command_says_what_it_does_in_its_help() -> None:
    commands = _commands(build_parser())
    assert {"up", "api", "config", "config check", "config show", "connector"} <= {name for name, _ in commands}
    for name, parser in commands:
        assert parser.description, f"`relaydesk {name} --help` has no description line"
        assert parser.description.split("\n")[0][:40] in parser.format_help(), name


def test_config_check_refuses_what_delivery_would_refuse_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "ok" to a file the delivery service then refused to start with.
    path = tmp_path / "relaydesk.toml"
    path.write_text("[delivery]\nconcurrency = 4\nper_endpoint_concurrency = 9\n")
    assert check_command(str(path), env={}) == 1
    assert "[delivery] per_endpoint_concurrency must be" in capsys.readouterr().err


def test_config_check_refuses_a_timelines_store_of_another_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an ops audit: the services refuse ``mysql://…`` at start (it was quietly an
    SQLite file named ``./mysql:/…``), but ``config check`` said ok."""
    bad = write(tmp_path, '[projection]\ndsn = "mysql://rd:secret@db/relaydesk"\n')
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "[projection] dsn: mysql:// is not a timelines store" in err and "secret" not in err
    good = write(tmp_path, '[projection]\ndsn = "postgresql://rd@db/relaydesk"\n')
    assert main(["config", "check", str(good)]) == 0
