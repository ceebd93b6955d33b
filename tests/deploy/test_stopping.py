"""How the container runtime stops a Relaydesk container: SIGTERM, then SIGKILL once the grace
period is over. The grace compose and Kubernetes give must be longer than the longest a service
waits on SIGTERM for work under way, or the runtime kills it in the middle of that work."""

from __future__ import annotations

import inspect
import re
from typing import Any

from connectors.sdk.outbound import OutboundWorker
from connectors.sdk.runtime import ConnectorRuntime
from services.runners import run_api
from services.sinks.sdk.runtime import SinkRuntime
from tests.deploy.deploy_files import k8s_docs, relaydesk_services, workloads

# Room on top of the waits below for the rest of a stop (NATS drained, stores closed, the log).
MARGIN_S = 5.0


def _shutdown_timeout(method: object) -> float:
    """The ``shutdown_timeout`` an HTTP runner is built with in ``method`` (how long its stop
    waits for requests under way)."""
    (value,) = re.findall(r"shutdown_timeout=([\d.]+)", inspect.getsource(method))  # type: ignore[arg-type]
    return float(value)


def longest_stop_s() -> float:
    """A connector's stop: its HTTP port closed (requests under way waited for), then the reply
    being sent waited for (``OutboundWorker.stop``), one after the other; a sink's the same way;
    the API's: its requests under way."""
    reply = inspect.signature(OutboundWorker.stop).parameters["timeout"].default
    http = max(_shutdown_timeout(ConnectorRuntime.start), _shutdown_timeout(SinkRuntime))
    return max(float(reply) + http, _shutdown_timeout(run_api)) + MARGIN_S


def _seconds(duration: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``1500ms``)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_the_bound_is_read_from_the_code() -> None:
    assert _seconds("1m30s") == 90 and _seconds("1500ms") == 1.5
    assert longest_stop_s() >= 10 + 5


def test_compose_gives_every_relaydesk_container_the_time_its_stop_takes() -> None:
    """Compose's default grace is 10 s: a connector finishing a reply (up to 10 s after its HTTP
    port closed, up to 5 s) was SIGKILLed, its reply neither reported nor handed back."""
    need = longest_stop_s()
    for name, spec in relaydesk_services().items():
        grace = _seconds(str(spec.get("stop_grace_period", "10s")))
        assert grace >= need, f"{name}: stop_grace_period {grace:.0f} s, its stop may take {need:.0f} s"


def _pre_stop_s(container: dict[str, Any]) -> float:
    return float(container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))


def test_kubernetes_gives_every_pod_the_time_its_stop_takes() -> None:
    """The grace counts from the preStop hook's start: the pause, then the stop."""
    for component, pod in workloads().items():
        (container,) = pod["spec"]["containers"]
        need = _pre_stop_s(container) + longest_stop_s()
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        assert grace >= need, f"{component}: terminationGracePeriodSeconds {grace:.0f}, its stop may take {need:.0f} s"


def test_a_pod_behind_a_service_keeps_serving_until_it_is_out_of_the_service() -> None:
    """Kubernetes sends SIGTERM while it takes the pod out of its Service's endpoints; a process
    that closed its port at once refused what kube-proxy and the ingress still routed to it (a
    Twilio SMS webhook is not sent again). A preStop pause covers that propagation."""
    served = {doc["spec"]["selector"]["app.kubernetes.io/component"] for doc in k8s_docs() if doc["kind"] == "Service"}
    assert {"api", "connector-sms"} <= served
    for component, pod in workloads().items():
        if component in served:
            (container,) = pod["spec"]["containers"]
            assert _pre_stop_s(container) >= 3, f"{component}: no preStop pause before SIGTERM"
