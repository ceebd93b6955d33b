"""The router as real ``relaydesk router`` processes, for the tests that kill, restart and
cut them off: a roster of 200 billing agents, their config file, the processes, and what the
log says about leadership and routing."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import msgspec
import nats

from events import subjects
from events.model import AgentOffered, ConversationAssigned
from events.store import EventStore
from services.lease import LeaseValue
from tests.cli_processes import CliProcesses

AGENTS = "\n".join(
    f'[[agents]]\nid = "agent{i:03d}"\nskills = {{ billing = 3 }}\nlanguages = {{ en = 5 }}\ncapacity = {{ sms = 3 }}\n'
    for i in range(200)
)
CONFIG = f"""
[router]
offer_channels = []

[runner]
lease_seconds = 1.0
tick_seconds = 0.05
snapshot_every = 200

{AGENTS}
"""

# How long a router process started now may take to lead (or to route what waits): a Python
# start, the log folded, the lease taken. Measured at 9-11 s on a loaded 2-core machine with
# nothing else of the suite running; with the other test worker busy it passed 20 s.
STARTING_S = 60.0


class RouterProcesses(CliProcesses):
    """``relaydesk router`` processes, each with its own instance id (its name)."""

    def __init__(self, nats_url: str, config_file: Path, log_dir: Path) -> None:
        super().__init__({}, log_dir, stop_wait_s=10.0)
        self.nats_url = nats_url
        self.config_file = config_file

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        # The environment as it is now: a test sets a variable (a health port) after the fixture.
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": self.nats_url,
            "RELAYDESK_RUNNER_INSTANCE_ID": name,
            "RELAYDESK_LOG_FORMAT": "json",
            **(env or {}),
        }
        super().start(name, *(args or ("router", "--config", str(self.config_file))), env=env)

    async def started(self, name: str) -> bool:
        """The process got past start-up (connected, streams checked, following the log)."""
        log = self.log_dir / f"{name}.log"
        return log.exists() and '"router.started"' in log.read_text()


async def routed(store: EventStore) -> Counter[str]:
    """How many routing decisions each conversation got."""
    counts: Counter[str] = Counter()
    for stored in await store.read(subjects.CUSTOMER_EVENTS_ALL):
        if isinstance(stored.event, (ConversationAssigned, AgentOffered)):
            counts[stored.event.conversation_id] += 1
    return counts


async def leader(nc_url: str) -> str | None:
    nc = await nats.connect(nc_url)
    try:
        kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
        entry = await kv.get("router")
        return msgspec.json.decode(entry.value, type=LeaseValue).holder if entry.value else None
    except Exception:
        return None
    finally:
        await nc.close()
