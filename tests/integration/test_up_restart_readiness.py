"""While ``relaydesk up`` waits to start a service again (``services.supervision``: it stopped on
NATS not answering), /readyz says that service is not ready. Found by a review of the restarts:
the check the stopped router had added stayed (NATS up, the last role it knew), so /readyz said
ready for the whole pause (up to 30 s) with no router running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats.errors
import pytest

from services import supervision
from services.bus.embedded import EmbeddedNats
from services.router_runner import RouterRunner
from tests.integration.system import running_system, system_config
from tests.integration.test_health_everywhere import eventually, fetch, with_health_port

pytestmark = pytest.mark.integration


async def test_readyz_names_a_service_waiting_to_be_started_again(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "FIRST_PAUSE_S", 120.0)  # still waiting while the test looks

    async def timed_out(self: RouterRunner) -> None:  # JetStream's answer came after the timeout
        raise nats.errors.TimeoutError

    monkeypatch.setattr(RouterRunner, "_load_snapshot", timed_out)
    config, health = with_health_port(system_config(tmp_path, clean_nats.url))
    async with running_system(config, clean_nats) as system:

        async def router_restarting() -> Any:
            status, body = await fetch(system.http, health + "/readyz")
            if status == 0 or not isinstance(body, dict) or "router" not in body.get("checks", {}):
                return None
            router = body["checks"]["router"]
            return (status, router) if router.get("reason", "").startswith("restarting") else None

        status, router = await eventually(router_restarting, timeout=30)
        assert status == 503 and router["ok"] is False, router
        assert (router["error"], router["restarts"]) == ("TimeoutError", 1)
