"""What the engine asks of a routing policy, and what a policy answers (its actions).

The engine owns the clock and the people (customers' patience, agents' shifts, offer
answers, handle times); a policy owns only who gets what. Times are seconds since the start.
Methods that can make a policy want to look again at a later time return those times
(wake-ups); ``route`` is called after every batch of simultaneous events and at wake-ups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.simulator.arrivals import Agent, Arrival


@dataclass(frozen=True)
class Offer:
    """The agent is offered the conversation (accept / decline / let it expire)."""

    conversation_id: str
    agent_id: str


@dataclass(frozen=True)
class Assign:
    """The agent has the conversation (assigned directly, no offer)."""

    conversation_id: str
    agent_id: str


@dataclass(frozen=True)
class Expired:
    """The policy withdrew an unanswered offer at its expiry."""

    conversation_id: str
    agent_id: str


@dataclass(frozen=True)
class SetAway:
    """The policy set the agent away (e.g. for letting offers expire)."""

    agent_id: str


Action = Offer | Assign | Expired | SetAway


class Policy(Protocol):
    name: str

    def start(self, agents: list[Agent]) -> None: ...

    def agent_status(self, now: float, agent_id: str, status: str) -> None:
        """``available``, ``away`` (no new work, keeps what it has) or ``offline``."""

    def arrive(self, now: float, arrival: Arrival) -> list[float]: ...

    def answer_offer(self, now: float, conversation_id: str, agent_id: str, accepted: bool) -> list[float]: ...

    def transfer(self, now: float, conversation_id: str, agent_id: str, skill: str) -> list[float]:
        """The agent hands the conversation back for someone with ``skill`` (and the language)."""

    def resolve(self, now: float, conversation_id: str, agent_id: str | None) -> list[float]:
        """Done by ``agent_id``, or abandoned while waiting / offered (``None``)."""

    def route(self, now: float) -> tuple[list[Action], list[float]]: ...
