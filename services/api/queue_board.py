"""``GET /v1/queues`` computed at most once in a while, however many supervisors poll it.

Each queue says why its work waits, which costs O(queues x agents): 0.8 s at 80,000 waiting
conversations and 5,000 agents (a scale audit), asked every 3 s by every supervisor page open.
The answer is kept and shared for ``FRESH_S`` seconds, or ten times what it took to compute if
that is longer, so the board never takes more than about a tenth of the API's CPU; an answer
carries ``as_of``, the time it was computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from router.policy import RouterPolicy
from router.state import RouterState
from services.api.views import queues_json

FRESH_S = 2.0
COST_SHARE = 10.0  # kept ten times as long as it took: at most ~10% of a core on the board


class QueueBoard:
    def __init__(
        self,
        compute: Callable[[RouterState, datetime, RouterPolicy], dict[str, Any]] = queues_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute = compute
        self.clock = clock
        self._answer: dict[str, Any] | None = None
        self._until = 0.0

    def answer(self, state: RouterState, now: datetime, policy: RouterPolicy) -> dict[str, Any]:
        started = self.clock()
        if self._answer is not None and started < self._until:
            return self._answer
        answer = {**self.compute(state, now, policy), "as_of": now.isoformat()}
        finished = self.clock()
        self._answer, self._until = answer, finished + max(FRESH_S, COST_SHARE * (finished - started))
        return answer
