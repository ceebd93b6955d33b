"""A reference queue for the self-checks: first-come-first-served on c identical agents, with
reneging (a customer whose wait would exceed her patience leaves and takes no agent).

The Kiefer-Wolfowitz recursion: each arrival, in order, takes the agent who frees first. With
patience known on arrival this is exact for FCFS, so it gives the wait every customer of a
simulated run must see when the policy is work-conserving and first-come-first-served."""

from __future__ import annotations

import heapq

from services.simulator.arrivals import Arrival


def fcfs(arrivals: list[Arrival], agents: int) -> dict[str, float | None]:
    """Conversation id -> wait (None: abandoned after waiting its patience)."""
    free = [0.0] * agents
    waits: dict[str, float | None] = {}
    for arrival in arrivals:
        start = max(free[0], arrival.at)
        if start - arrival.at > arrival.patience_seconds:
            waits[arrival.conversation_id] = None
            continue
        heapq.heapreplace(free, start + arrival.handle_seconds)
        waits[arrival.conversation_id] = start - arrival.at
    return waits
