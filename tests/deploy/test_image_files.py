"""The image (deploy/Dockerfile, .dockerignore, the locks): a numeric user, a health check,
every listener on all interfaces, every published port exposed, dependencies only from
hash-pinned locks, and a build context without data, secrets or the virtualenv."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import msgspec
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from connectors.sdk import registry
from services.up import BUILT_IN_CONNECTORS
from tests.deploy import compose_rig as rig
from tests.deploy.deploy_files import CONNECTORS, DEPLOY, ROOT, dockerfile_env, relaydesk_services, workloads


def test_the_image_runs_as_a_numeric_user_with_a_healthcheck_from_the_lock() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and all(re.fullmatch(r"\d+(:\d+)?", u) for u in users), users
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*python.*/healthz", text, re.M)
    assert "--require-hashes -r deploy/requirements.lock" in text
    assert "pip install --no-deps /wheels/" in text


def test_every_listener_in_the_image_binds_all_interfaces() -> None:
    env = dockerfile_env()
    assert env["RELAYDESK_API_HOST"] == env["RELAYDESK_HEALTH_HOST"] == "0.0.0.0"
    for name in CONNECTORS:
        settings = registry.load(name).Settings
        defaults = msgspec.structs.asdict(settings())
        # A field defaulting to a loopback address is something this connector listens on.
        listeners = [k for k, v in defaults.items() if k.endswith("host") and v in ("127.0.0.1", "localhost")]
        assert "host" in listeners, name
        for key in listeners:
            variable = f"RELAYDESK_CONNECTOR_{name.upper()}_{key.upper()}"
            if name in BUILT_IN_CONNECTORS:
                assert env.get(variable) == "0.0.0.0", (name, key)
            else:
                # Voice: set by compose and Kubernetes, not the image, where a [connectors.voice]
                # table would make `relaydesk up` start it (test_deploy_files checks both bind it).
                assert variable not in env, (name, key)


def _lock(path: Path) -> dict[str, str]:
    text = path.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M))
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    for block in blocks:
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]
    return {str(canonicalize_name(k)): v for k, v in pins.items()}


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _lock(DEPLOY / "requirements.lock")
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"].get("otel", [])]
    for req in wanted:
        name = str(canonicalize_name(req.name))
        assert name in pins, f"{req.name} is not in deploy/requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {req}"
        if "binary" in req.extras:
            assert f"{name}-binary" in pins, req
    assert "setuptools" in _lock(DEPLOY / "build.lock")


def _context_includes(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    included = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/").replace("**/", "*").replace("**", "*")
        if any(fnmatch.fnmatchcase(c, body) for c in candidates):
            included = negate
    return included


def test_the_build_context_holds_sources_but_no_data_secrets_or_venv() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in ("pyproject.toml", "events/model.py", "services/cli.py", "deploy/requirements.lock"):
        assert _context_includes(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".relaydesk/api-token",
        ".relaydesk-demo/nats/jetstream",
        ".git/HEAD",
        "tests/conftest.py",
        "deploy/secrets/api_token",
        "deploy/secrets/nats.env",
        "services/__pycache__/cli.cpython-311.pyc",
        "services/timelines.db",
        ".mypy_cache/x",
    ):
        assert not _context_includes(path, patterns), path


def _exposed() -> set[int]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    return {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE\s+(.+)$", final, re.M) for p in line.split()}


def test_the_image_exposes_every_port_compose_and_kubernetes_publish_and_the_connectors_defaults() -> None:
    published = {port for spec in relaydesk_services().values() for port in rig.published_ports(spec)}
    for template in workloads().values():
        (container,) = template["spec"]["containers"]
        published |= {int(p["containerPort"]) for p in container.get("ports") or []}
    exposed = _exposed()
    assert published <= exposed, f"EXPOSE lacks {sorted(published - exposed)}"
    assert exposed <= published, f"EXPOSE lists {sorted(exposed - published)}, which nothing publishes"
    for name in CONNECTORS:  # what a connector listens on with no setting: <x>host's <x>port
        defaults = msgspec.structs.asdict(registry.load(name).Settings())
        hosts = [k for k, v in defaults.items() if k.endswith("host") and v in ("127.0.0.1", "localhost")]
        ports = {int(defaults[k.removesuffix("host") + "port"]) for k in hosts}
        assert ports and ports <= exposed, (name, sorted(ports - exposed))
