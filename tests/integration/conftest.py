"""Fixtures shared by the integration tests that run the router as processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedded_nats import EmbeddedNats
from tests.integration.routers import CONFIG, RouterProcesses


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def routers(clean_nats: EmbeddedNats, config_file: Path, tmp_path: Path) -> Iterator[RouterProcesses]:
    procs = RouterProcesses(clean_nats.url, config_file, tmp_path)
    yield procs
    procs.stop_all()
