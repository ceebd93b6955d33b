"""``relaydesk up`` runs every service in one process: a service that stops on a NATS answer
that did not come (a timeout, a reconnect under way) is started again there, as a container's
orchestrator starts a container again, instead of taking every other service down with it.

Found on a loaded machine (load 10 on two cores): the router's start asked JetStream for its
snapshot and consumer, an answer took longer than the request timeout, and ``TimeoutError``
ended the router, so ``up`` stopped intake, the API and the connectors too. A service that fails
for any other reason (``ServiceFailed``: its configuration, a port taken, a log restored under
it), or keeps failing (``RESTART_LIMIT`` times within ``RESTART_WINDOW_S``), still stops ``up``
with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from events.errors import describe_error
from events.storage_full import STORAGE_FULL, note_storage_full, storage_full
from services.bus.connection import ServiceFailed
from services.bus.errors import NATS_UNAVAILABLE
from services.health.checks import Check, CheckResult, Health
from services.metrics import SERVICE_RESTARTS

log = structlog.get_logger(__name__)

RESTART_LIMIT = 5
RESTART_WINDOW_S = 300.0
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0

Start = Callable[[], Coroutine[Any, Any, None]]


async def supervised(name: str, start: Start, stop: asyncio.Event, health: Health | None = None) -> None:
    """Run ``start()`` until it returns (the service stopped when ``stop`` was set); after a
    NATS answer that did not come, start it again after a pause (doubling from 1 s to 30 s).
    Meanwhile its readiness check (``health``, by ``name``) says it is restarting: the check
    the stopped service left said ready (NATS is up), and /readyz hid a router that was down
    for up to 30 s; its next start adds its own check again."""
    restarts: deque[float] = deque()
    pause = FIRST_PAUSE_S
    while True:
        began = time.monotonic()
        try:
            await start()
            return
        except SystemExit as err:  # raised inside a task it would escape the event loop
            raise ServiceFailed(str(err.code) if err.code is not None else "exited") from err
        except NATS_UNAVAILABLE as err:
            if stop.is_set():
                return  # stopping anyway: what NATS did not answer no longer matters
            now = time.monotonic()
            if now - began > MAX_PAUSE_S * 2:
                pause = FIRST_PAUSE_S  # it had been running well: a new trouble, not the same one
            restarts.append(now)
            while restarts and restarts[0] < now - RESTART_WINDOW_S:
                restarts.popleft()
            full = storage_full(err)  # not an absence: JetStream answers, and refuses to store
            if full:
                note_storage_full(f"up.{name}", err)
            if len(restarts) > RESTART_LIMIT:
                question = STORAGE_FULL if full else "is NATS up and not overloaded?"
                raise ServiceFailed(
                    f"{name} stopped {len(restarts)} times within {RESTART_WINDOW_S:.0f} s on NATS not"
                    f" answering (last: {describe_error(err)}); {question}"
                ) from err
            SERVICE_RESTARTS.labels(service=name).inc()
            if health is not None:
                health.add(name, _restarting(type(err).__name__, len(restarts)))
            log.warning(
                "up.service_restarting",
                service=name,
                error=repr(err),
                in_seconds=pause,
                restarts=len(restarts),
                reason=STORAGE_FULL if full else "NATS did not answer in time",
            )
            try:
                await asyncio.wait_for(stop.wait(), pause)
                return
            except TimeoutError:
                pass
            pause = min(pause * 2, MAX_PAUSE_S)


def _restarting(error: str, restarts: int) -> Check:
    async def check() -> CheckResult:
        return CheckResult(
            False, {"reason": "restarting: NATS did not answer in time", "error": error, "restarts": restarts}
        )

    return check
