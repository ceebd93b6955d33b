"""How often one conversation's customer messages ping its agent: a token bucket per
conversation, on the messages' own times (``MessageReceived.at``).

Every customer message on an assigned conversation was a ``message`` notice for each of the
agent's endpoints: a flood from one customer (a chat bot, a mail loop, a number spamming SMS:
found by the flood audit) was a Slack post, a webhook and a mail per message, thousands of
them; Slack takes about one post a second per channel, so the agent's other conversations'
notices (offers with an expiry) queued behind the flood's, and each was a delivery record.

A conversation's messages ping at most ``burst`` times at once and one every ``every_s``
seconds after that; the others are counted, and the next notice that goes says how many it
stands for (``body["messages"]``, its preview the newest message). Decided on the log's own
times, so a replay or a standby decides the same (a restart begins each bucket full: a few
more pings at most). A person typing ("hi", "my order", "is late") stays under the burst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

BURST = 5
EVERY_S = 20.0


@dataclass
class _Bucket:
    tokens: float
    at: datetime
    held: int = 0  # messages not told since the last notice


@dataclass
class MessagePacing:
    burst: int = BURST
    every_s: float = EVERY_S
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, conversation_id: str, at: datetime) -> int:
        """How many messages a notice now stands for (this one and those held before it), or 0:
        no notice for this one (held, told by the next)."""
        bucket = self._buckets.get(conversation_id)
        if bucket is None:
            bucket = self._buckets[conversation_id] = _Bucket(tokens=float(self.burst), at=at)
        elapsed = max(0.0, (at - bucket.at).total_seconds())  # a clock step back refills nothing
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed / self.every_s)
        bucket.at = max(bucket.at, at)
        if bucket.tokens < 1.0:
            bucket.held += 1
            return 0
        bucket.tokens -= 1.0
        told, bucket.held = bucket.held + 1, 0
        return told

    def forget(self, conversation_id: str) -> None:
        """The conversation is resolved (or no longer held): nothing more to pace."""
        self._buckets.pop(conversation_id, None)
