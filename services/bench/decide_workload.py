"""The synthetic world of ``relaydesk bench decide`` (see ``services.bench.decide``): agents
with random skills, languages, tiers and capacities, every agent busy to capacity, then N
conversations waiting, folded the way the router runner folds them, with the fold's CPU time
kept per event type (``Bench.fold``). What is measured on it, and how, is ``decide``'s."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from events import subjects
from events.model import (
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    Channel,
    ConversationAssigned,
    ConversationOpened,
    DecisionReason,
    LogEvent,
    Requirements,
    RoutingRequested,
)
from router.fold import evolve
from router.state import RouterState
from services.bench.decide_report import GC

SKILLS = ("billing", "technical", "shipping", "returns", "account", "sales", "privacy", "general")
LANGUAGES = ("en", "es", "fr", "de", "pt")
CAPACITY: dict[str, int] = {"chat": 2, "sms": 1, "email": 2}
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
REASON = DecisionReason(rule="bench")


@dataclass(frozen=True)
class Cell:
    agents: int
    waiting: int
    decisions: int
    seed: int


class Bench:
    """A state plus the log position, folded the way the runner folds."""

    def __init__(self, seed: int) -> None:
        self.state = RouterState()
        self.reader: RouterState | None = None  # a read model folding the same events (cycle phase)
        self.reader_ns = 0
        self.seq = 0
        self.rng = random.Random(seed)
        self.conversations = 0
        self.fold_ns = 0
        self.by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # type -> [events, ns]

    def fold(self, event: LogEvent) -> None:
        self.seq += 1
        subject = subjects.for_event(event)
        GC.timing = True
        t0 = time.thread_time_ns()
        evolve(self.state, self.seq, subject, event)
        took = time.thread_time_ns() - t0
        GC.timing = False
        self.fold_ns += took
        slot = self.by_type[type(event).__name__]
        slot[0] += 1
        slot[1] += took
        if self.reader is not None:
            t0 = time.thread_time_ns()
            evolve(self.reader, self.seq, subject, event)
            self.reader_ns += time.thread_time_ns() - t0

    def profile(self) -> AgentProfile:
        rng = self.rng
        skills = {skill: rng.randint(1, 5) for skill in rng.sample(SKILLS, rng.randint(1, 3))}
        languages = {lang: 5 for lang in rng.sample(LANGUAGES, rng.choice((1, 1, 2)))}
        tier = rng.choices((1, 2, 3), weights=(70, 25, 5))[0]
        return AgentProfile(skills=skills, languages=languages, tier=tier, capacity=dict(CAPACITY))

    def requirements(self, profile: AgentProfile | None = None) -> Requirements:
        """Requirements drawn like intake's (one skill, sometimes two); fitted to ``profile`` if given."""
        rng = self.rng
        if profile is not None:
            skill = rng.choice(sorted(profile.skills))
            return Requirements(
                skills={skill: 1}, language=rng.choice(sorted(profile.languages)), priority=rng.choice((0, 0, 1))
            )
        skills = {skill: rng.choice((1, 1, 2, 3)) for skill in rng.sample(SKILLS, rng.choice((1, 1, 1, 2)))}
        return Requirements(
            skills=skills,
            language=rng.choices(LANGUAGES, weights=(50, 20, 10, 10, 10))[0],
            priority=rng.choice((0, 0, 1, 2)),
        )

    def open(self, channel: Channel, req: Requirements, when: datetime) -> tuple[str, str]:
        self.conversations += 1
        conversation_id = f"c{self.conversations}"
        customer_id = f"k{self.conversations}"
        self.fold(
            ConversationOpened(
                at=when, customer_id=customer_id, conversation_id=conversation_id, channel=channel, contact="x"
            )
        )
        self.fold(
            RoutingRequested(
                at=when, customer_id=customer_id, conversation_id=conversation_id, channel=channel, requirements=req
            )
        )
        return customer_id, conversation_id


def build(cell: Cell) -> Bench:
    """Every agent busy to capacity, then ``cell.waiting`` conversations waiting."""
    bench = Bench(cell.seed)
    busy_since = T0 - timedelta(minutes=10)
    for n in range(cell.agents):
        agent_id = f"a{n}"
        profile = bench.profile()
        bench.fold(AgentProfileUpdated(at=busy_since, agent_id=agent_id, profile=profile))
        bench.fold(AgentStatusChanged(at=busy_since, agent_id=agent_id, status="available"))
        for channel, slots in CAPACITY.items():
            for _ in range(slots):
                customer_id, conversation_id = bench.open(channel, bench.requirements(profile), busy_since)
                bench.fold(
                    ConversationAssigned(
                        at=busy_since,
                        customer_id=customer_id,
                        conversation_id=conversation_id,
                        agent_id=agent_id,
                        channel=channel,
                        reason=REASON,
                    )
                )
    channels: list[Channel] = ["chat", "chat", "sms", "email"]
    for n in range(cell.waiting):
        # Arrivals spread over the last 20 s: inside every escalation wait, so the timed calls route.
        when = T0 - timedelta(seconds=20 * (cell.waiting - n) / cell.waiting)
        bench.open(bench.rng.choice(channels), bench.requirements(), when)
    return bench
