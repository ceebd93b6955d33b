"""What the deploy tests read: deploy/compose.yaml, the Kubernetes manifests, the Dockerfile."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from deploy import check

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SERVICES = {
    "setup",
    "intake",
    "router-a",
    "router-b",
    "projector",
    "delivery",
    "api",
    "connector-sms",
    "connector-email",
    "connector-chat",
    "connector-social",
    "connector-voice",
    "sink-zendesk",  # profile zendesk
    "sink-freshdesk",  # profile freshdesk
}
SINKS = ("zendesk", "freshdesk")  # optional: a compose profile, a kustomize component each
K8S_DEPLOYMENTS = {
    "intake",
    "router",
    "projector",
    "delivery",
    "api",
    "connector-sms",
    "connector-email",
    "connector-chat",
    "connector-social",
    "connector-voice",
    "sink-zendesk",  # the optional components (deploy/k8s/sinks/): checked like the rest
    "sink-freshdesk",
}
PUBLIC = {
    "api",
    "connector-sms",
    "connector-email",
    "connector-chat",
    "connector-social",
    "connector-voice",
    "sink-zendesk",
    "sink-freshdesk",
}
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|SIGNING_KEY|WIDGET_KEY|DSN|CREDS|SEED)", re.I)
CONNECTORS = ("sms", "email", "chat", "social", "voice")


@functools.cache
def _compose() -> dict[str, Any]:
    (doc,) = check.load_yaml_documents(DEPLOY / "compose.yaml")
    assert isinstance(doc, dict)
    return doc


def compose() -> dict[str, Any]:
    return copy.deepcopy(_compose())


def relaydesk_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Relaydesk image (the others are NATS and PostgreSQL)."""
    return {name: spec for name, spec in compose()["services"].items() if "build" in spec}


@functools.cache
def k8s_docs() -> list[dict[str, Any]]:
    return [doc for _, doc in check.k8s_documents()]


def workloads() -> dict[str, dict[str, Any]]:
    """component -> pod template, for every Deployment and the setup Job."""
    out: dict[str, dict[str, Any]] = {}
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            out[component] = doc["spec"]["template"]
    return out


def dockerfile_env() -> dict[str, str]:
    """ENV of the final stage (continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
