"""The agents' side running over a nats-server of the test's own (see helpers.agent_system)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats

from .helpers import AgentSystem, agent_system, agents_config


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """Every service, the two-agent roster (ava, bruno) and no delivery endpoints."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as system:
        yield system
