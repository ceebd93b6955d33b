"""The helpers that read deploy/compose.yaml for the smoke test: interpolation, host mapping,
the NATS config rewrite, the short and long forms of compose keys; and a static check of the
real compose file (no process started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import compose_rig as rig
from tests.deploy.compose_run import ComposeRun


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert rig.interpolate("a${SET}b$SET", env) == "axbx"
    assert rig.interpolate("${MISSING:-dflt} ${EMPTY:-dflt} ${EMPTY-dflt}", env) == "dflt dflt "
    assert rig.interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    assert rig.interpolate("$$SET costs $$5", env) == "$SET costs $5"
    assert rig.interpolate("${MISSING:-${SET}}", env) == "x"
    with pytest.raises(rig.ComposeError, match="MISSING is required: set it"):
        rig.interpolate("${MISSING:?set it}", env)
    with pytest.raises(rig.ComposeError, match="EMPTY"):
        rig.interpolate("${EMPTY:?}", env)
    assert rig.interpolate("${EMPTY?}", env) == ""  # set, if empty: no error without the colon


def test_load_merges_anchors_and_interpolates(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        "x-env: &env\n  A: ${A:-one}\n  B: 2\n"
        "services:\n"
        "  s:\n    environment: { <<: *env, B: '3', C: '${C:?need C}' }\n"
        "    depends_on: [t]\n    ports: ['127.0.0.1:80:8080/tcp', {target: 2525, published: 25}]\n"
        "  t:\n    environment: [X=1, Y]\n    depends_on: { s: { condition: service_healthy } }\n"
    )
    compose = rig.load_compose(path, {"C": "c"})
    s, t = compose["services"]["s"], compose["services"]["t"]
    assert rig.environment(s) == {"A": "one", "B": "3", "C": "c"}
    assert rig.environment(t) == {"X": "1"}
    assert rig.depends_on(s) == {"t": "service_started"}
    assert rig.depends_on(t) == {"s": "service_healthy"}
    assert rig.published_ports(s) == [8080, 2525]
    with pytest.raises(rig.ComposeError, match="need C"):
        rig.load_compose(path, {})


def test_host_mapping_rewrites_services_and_the_database() -> None:
    hosts = {("nats-1", 4222): 40001, ("nats-2", 4222): 40002, ("api", 8080): 40080}
    local = "postgresql://postgres@127.0.0.1:5432/rd_smoke_x"
    assert rig.map_value("nats://nats-1:4222,nats://nats-2:4222", hosts) == (
        "nats://127.0.0.1:40001,nats://127.0.0.1:40002"
    )
    assert rig.map_value("http://api:8080/console", hosts) == "http://127.0.0.1:40080/console"
    assert rig.map_value("nats://nats-9:4222 api:9999", hosts) == "nats://nats-9:4222 api:9999"  # unknown: kept
    dsn = "postgresql://relaydesk:s3cret@postgres:5432/relaydesk"
    assert rig.map_value(dsn, hosts, postgres=local) == local
    other = "postgresql://u@db.example.com:5432/x"
    assert rig.map_value(other, hosts, postgres=local) == other


def test_nats_conf_is_localized_for_one_node() -> None:
    conf = (
        "port: 4222\nhttp: 8222\njetstream {\n  max_file_store: 1G\n}\ninclude ./auth.conf\n"
        "cluster {\n  name: rd\n  port: 6222\n  routes: [\n    nats-route://nats-1:6222\n"
        "    nats-route://nats-2:6222\n  ]\n}\n"
    )
    ports = {("nats-1", 4222): 1, ("nats-1", 6222): 2, ("nats-1", 8222): 3, ("nats-2", 6222): 12}

    def lookup(node: str, port: int) -> int:
        return ports[(node or "nats-1", port)]

    text, rewrote = rig.localize_nats_conf(conf, rig.NATS_DEFAULTS, lookup)
    assert rewrote == {"client", "cluster", "monitor", "routes"}
    assert "host: 127.0.0.1\nport: 1\n" in text
    assert "http: 127.0.0.1:3\n" in text
    assert "  host: 127.0.0.1\n  port: 2\n" in text
    assert "nats-route://127.0.0.1:2\n" in text and "nats-route://127.0.0.1:12\n" in text
    assert "max_file_store: 1G" in text and "nats-1" not in text


def test_dockerfile_env_is_the_last_stage(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM a\nENV BUILD=1\nFROM b\nENV A=1 \\\n    B=two\nENV OLD value with spaces\n")
    assert rig.dockerfile_env(path) == {"A": "1", "B": "two", "OLD": "value with spaces"}


def test_the_real_compose_file_maps_to_this_machine(tmp_path: Path) -> None:
    """deploy/compose.yaml as it is: every service resolves, every published port is one the
    service listens on and binds beyond its container's loopback, every secret it reads is
    mounted, and nothing still names a compose host once mapped."""
    run = ComposeRun(tmp_path, {"RELAYDESK_EMAIL_DOMAINS": "help.example.test"})
    assert run.problems == []
    assert run.setting("connector-email", "RELAYDESK_CONNECTOR_EMAIL_DOMAINS") == "help.example.test"
    nats_nodes = [name for name, s in run.services.items() if s.nats]
    assert len(nats_nodes) == 3
    for service in run.services.values():
        for value in [*service.env.values(), *service.argv]:
            assert not any(f"{node}:" in value for node in nats_nodes), (service.name, value)
            assert "/run/secrets/" not in value, (service.name, value)
        if not service.nats and service.cmd != ["setup"]:
            assert "RELAYDESK_HEALTH_PORT" in service.env, service.name
    dsn = run.setting("api", "RELAYDESK_PROJECTION_DSN")
    assert dsn == run.dsn


def test_the_sinks_run_only_with_their_profile_and_voice_always(tmp_path: Path) -> None:
    """As `docker compose up`: no helpdesk sink unless its profile is named; then each one's
    webhook port is published, bound beyond loopback, and its secrets are mounted."""
    plain = ComposeRun(tmp_path / "plain")
    assert "connector-voice" in plain.services
    assert not {"sink-zendesk", "sink-freshdesk"} & set(plain.services)

    variables = {"RELAYDESK_SINK_ZENDESK_SUBDOMAIN": "acme", "RELAYDESK_SINK_FRESHDESK_DOMAIN": "acme"}
    run = ComposeRun(tmp_path / "sinks", variables, profiles=["zendesk", "freshdesk"])
    assert run.problems == []
    assert run.setting("sink-zendesk", "RELAYDESK_SINK_ZENDESK_SUBDOMAIN") == "acme"
    assert run.setting("sink-zendesk", "RELAYDESK_SINK_ZENDESK_API_TOKEN")
    assert run.setting("sink-freshdesk", "RELAYDESK_SINK_FRESHDESK_API_KEY")
    assert {8095, 9090} <= set(run.services["sink-zendesk"].ports)
    assert {8096, 9090} <= set(run.services["sink-freshdesk"].ports)
