"""The per-address rate limit of visitor messages: a token bucket per address, on this instance."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from connectors.sdk import ConnectorError


class RateLimited(ConnectorError):
    status = 429


@dataclass
class RateLimiter:
    """A token bucket per address: ``per_minute`` messages a minute, bursts up to ``per_minute``."""

    per_minute: int
    max_keys: int = 50_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    @property
    def _rate(self) -> float:
        return self.per_minute / 60.0

    def _tokens(self, key: str, t: float) -> float:
        """The tokens ``key`` has at time ``t`` (a full bucket for a new key)."""
        tokens, last = self._buckets.get(key, (float(self.per_minute), t))
        return min(float(self.per_minute), tokens + (t - last) * self._rate)

    def take(self, key: str, now: float | None = None) -> float:
        """0 if a message may go now (and count it), else the seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        tokens = self._tokens(key, t)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, t)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[key] = (tokens, t)
        return (1.0 - tokens) / self._rate

    def take_wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may send again, without counting anything."""
        if self.per_minute <= 0 or key not in self._buckets:
            return 0.0
        tokens = self._tokens(key, time.monotonic() if now is None else now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate


@dataclass
class NewVisitorLimit:
    """New visitors a client (an IP address) may open sessions for: ``per_minute`` a minute,
    bursts up to the same number. Found by an audit: a script minting visitor ids opened a
    session and a conversation each (300 in 0.7 s from one address), flooding the agents'
    queue; the per-address message limit counts nothing there, each address being new. A
    visitor counts once (reloading the page is not a new visitor), a returning one never."""

    per_minute: int
    max_visitors: int = 50_000
    _clients: RateLimiter = field(init=False)
    _counted: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._clients = RateLimiter(self.per_minute)

    def take(self, client: str, address: str, now: float | None = None) -> float:
        """0 if ``client`` may open a session for the new visitor ``address`` (counted once), else
        the seconds to wait."""
        if self.per_minute <= 0 or address in self._counted:
            return 0.0
        wait = self._clients.take(client, now)
        if not wait:
            self._counted[address] = None
            while len(self._counted) > self.max_visitors:
                self._counted.popitem(last=False)
        return wait


@dataclass
class Refusals:
    """Whether a refusal of ``key`` is worth a warning: the first in ``every_s`` seconds is, the
    rest are debug. A flooding visitor is refused hundreds of times a second (found by the
    flood audit: one warning line each, the operator's log flooded with the visitor)."""

    every_s: float = 60.0
    max_keys: int = 50_000
    _last: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def worth_a_warning(self, key: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and t - last < self.every_s:
            return False
        self._last[key] = t
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True
