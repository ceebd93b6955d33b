"""A metric one kind of process measures is exported by that process alone: no other process
shows it at a made-up 0 (found by an observability audit: prometheus_client exports an
unlabelled gauge or histogram as soon as it is defined, so the router, the projector, delivery
and the connectors all said ``relaydesk_api_view_lag_events 0`` and
``relaydesk_intake_pending_messages 0``; with the API down, ``absent()`` never fired).

Real ``relaydesk <service>`` processes, each alone in its interpreter (an in-process registry is
shared by every service a test session ran), against this test's own nats-server; each one's
health port is scraped once it is ready."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from prometheus_client.parser import text_string_to_metric_families

from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import API_TOKEN, AUTH_TOKEN, eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Each sample that only some processes may show -> the services that measure it.
OWNED = {
    "relaydesk_intake_pending_messages": {"intake", "api"},  # the API reads intake's lag at /readyz
    "relaydesk_intake_oldest_pending_age_seconds": {"intake", "api"},
    "relaydesk_api_view_lag_events": {"api"},
    "relaydesk_agent_tokens_refused_total": {"api"},
    "relaydesk_api_language_reason_unread_total": {"api"},
    "relaydesk_routing_decide_seconds_count": {"router"},
}
# What each process shows once ready, to know its scrape is a real one.
OWN = {
    "projector": "relaydesk_projector_lag_events",
    "connector sms": "relaydesk_inbound_messages_total",
    "router": "relaydesk_leader",
    "intake": "relaydesk_intake_pending_messages",
    "api": "relaydesk_api_view_lag_events",
}


class Service:
    """``python -m services.cli <service>`` with its health port, its own data dir and log."""

    def __init__(self, name: str, nats_url: str, tmp: Path) -> None:
        self.name = name
        self.shown: set[str] = set()  # the samples of its last scrape
        self.health = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp / f"{name.replace(' ', '-')}.log"
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": nats_url,
            "RELAYDESK_DATA_DIR": str(tmp / name.replace(" ", "-")),
            "RELAYDESK_HEALTH_PORT": self.health.rsplit(":", 1)[1],
            "RELAYDESK_API_PORT": str(free_port()),
            "RELAYDESK_API_TOKEN": API_TOKEN,
            "RELAYDESK_CONNECTOR_SMS_PORT": str(free_port()),
            "RELAYDESK_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "RELAYDESK_LOG_FORMAT": "json",
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *name.split()],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def why(self) -> str:
        return f"{self.name}: " + self.log_path.read_text()[-3000:]

    async def samples(self, http: aiohttp.ClientSession) -> set[str] | None:
        """The names of the samples its /metrics shows once it is ready (None before)."""
        assert self.proc.poll() is None, self.why()
        try:
            async with http.get(self.health + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    return None
            async with http.get(self.health + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None  # not listening yet
        self.shown = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        return self.shown if OWN[self.name] in self.shown else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def services(names: list[str], nats_url: str, tmp: Path) -> Iterator[dict[str, Service]]:
    started: dict[str, Service] = {}
    try:
        for name in names:
            started[name] = Service(name, nats_url, tmp)
        yield started
    finally:
        for service in started.values():
            service.stop()


async def test_each_process_exports_only_the_metrics_it_measures(
    clean_nats: EmbeddedNats, clean_nc: NATS, tmp_path: Path
) -> None:
    # clean_nc: the streams and buckets made, as `relaydesk setup` would.
    with services(list(OWN), clean_nats.url, tmp_path) as running:
        async with aiohttp.ClientSession() as http:
            for name, service in running.items():
                measured = {sample for sample, owners in OWNED.items() if name in owners}

                async def measuring(s: Service = service, measured: set[str] = measured) -> set[str] | None:
                    shown = await s.samples(http)
                    return shown if shown is not None and measured <= shown else None

                try:
                    shown = await eventually(measuring, timeout=60, every=0.2)
                except AssertionError as err:
                    missing = sorted(measured - service.shown)
                    raise AssertionError(f"{name} never showed {missing} ({service.why()})") from err
                made_up = {sample for sample in OWNED if sample in shown} - measured
                assert not made_up, f"{name} exports {sorted(made_up)}, which it never measures"


IMPORT_EVERYTHING = """
import importlib, pkgutil
from prometheus_client import REGISTRY, generate_latest
for package in ("events", "router", "connectors", "services"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not info.name.endswith("__main__"):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional dependency not installed here
                pass
print("\\n".join(line for line in generate_latest(REGISTRY).decode().splitlines() if line.startswith("relaydesk_")))
"""


def test_importing_every_module_exports_no_series() -> None:
    # The mechanism, for metrics to come: defining a metric exports nothing by itself. An
    # unlabelled one in the default registry would show here at 0 (services.metrics.measured).
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [], done.stdout
