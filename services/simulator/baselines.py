"""The policies teams use today, from their documented behaviour, on the engine's interface.

- Chatwoot round robin: an inbox (here: a channel) rotates through its *online* members;
  the next one under the per-agent limit gets the conversation and moves to the back of
  the rotation. No skills, languages or tiers. Offline agents are never assigned
  (maintainers in https://github.com/chatwoot/chatwoot/issues/5672: "none of the offline
  agents would be assigned a conversation. The conversations would be assigned in a
  round-robin fashion"); the limit is the inbox's auto-assignment limit (here: the agent's
  capacity on the channel). Unassigned conversations are assigned, oldest first, when room frees.
- Rocket.Chat load balancing (auto-selection): the available agent of the department with
  the lowest count of open chats, ties to the first in order, under "max simultaneous chats"
  (https://github.com/RocketChat/docs/blob/main/use-rocket.chat/omnichannel/omnichannel-admins-guide/queue-types-routing-algorithm.md).
  Departments here are topics (an agent belongs to the department of each skill she has);
  no languages or tiers. A conversation whose topic has no department routes to everyone.
- Twilio TaskRouter skills workflow: targets tried in order, each with a timeout
  (https://twilio.com/docs/taskrouter/workflow-configuration, https://twilio.com/docs/taskrouter/task-evaluation):
  skill at the required level in the customer's language (and a tier-2 worker for platinum /
  flagged customers), after 60 s any level of the skill in the language, after 180 s anyone
  with the skill. Task priority from the customer's tier (the router policy's boosts), then
  age; among matching workers the one unoccupied longest (no ``order_by``:
  https://twilio.com/docs/taskrouter/order-workers); per-channel capacity (multitasking).
  Offer channels get a reservation (accept / reject / timeout); a worker who rejected or let it
  time out is not reserved for that task again.

Chatwoot and Rocket.Chat assign directly (no accept step): they never see declines.

Every baseline keeps the cross-channel rule the router applies (``[router] exclusive_channels``,
default voice; ``exclusive_max_other_load``): a worker on a call takes nothing else, as any
contact centre's phone system enforces (an agent on the phone is not also sent a chat), so
the figures compare routing, not an impossible double booking.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from services.simulator.arrivals import Agent, Arrival
from services.simulator.policy import Action, Assign, Expired, Offer
from services.simulator.scenario import Scenario


@dataclass
class _Worker:
    agent: Agent
    status: str = "offline"
    load: dict[str, int] = field(default_factory=dict)
    last_work: float = -1.0  # last assignment or time it became unoccupied: longest idle first
    # The router's cross-channel rule (``router.cross_channel``), from the scenario's [router].
    exclusive: tuple[str, ...] = ()
    exclusive_max_other_load: int | None = None

    def room(self, channel: str) -> bool:
        if self.status != "available" or self.load.get(channel, 0) >= self.agent.capacity.get(channel, 0):
            return False
        if any(self.load.get(name, 0) for name in self.exclusive):
            return False  # on a call (or a call reserved for her): nothing else
        limit = self.exclusive_max_other_load
        if channel in self.exclusive and limit is not None:
            return sum(n for name, n in self.load.items() if name not in self.exclusive) <= limit
        return True

    def total(self) -> int:
        return sum(self.load.values())


@dataclass
class _Task:
    arrival: Arrival
    since: float  # start of this wait (a transfer starts a new one)
    excluded: set[str] = field(default_factory=set)
    holder: str | None = None
    expires: float = 0.0


class _Baseline:
    name = "baseline"
    reserves = False  # offers (reservations) on the scenario's offer channels

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.workers: dict[str, _Worker] = {}
        self.waiting: dict[str, _Task] = {}  # insertion order: oldest first
        self.tasks: dict[str, _Task] = {}
        self.dirty = True

    # --- the engine's interface ----------------------------------------------------------

    def start(self, agents: list[Agent]) -> None:
        policy = self.scenario.router
        self.workers = {
            a.agent_id: _Worker(
                a, exclusive=policy.exclusive_channels, exclusive_max_other_load=policy.exclusive_max_other_load
            )
            for a in agents
        }

    def agent_status(self, now: float, agent_id: str, status: str) -> None:
        worker = self.workers[agent_id]
        if status == "available" and worker.status != "available":
            worker.last_work = max(worker.last_work, now) if worker.total() == 0 else worker.last_work
        worker.status = status
        self.dirty = True

    def arrive(self, now: float, arrival: Arrival) -> list[float]:
        task = _Task(arrival, since=now)
        self.tasks[arrival.conversation_id] = task
        self.waiting[arrival.conversation_id] = task
        self.dirty = True
        return self.wakes(now)

    def answer_offer(self, now: float, conversation_id: str, agent_id: str, accepted: bool) -> list[float]:
        task = self.tasks[conversation_id]
        if not accepted:
            self._free(now, task)
            task.excluded.add(agent_id)
            self._requeue(task)
        task.expires = 0.0
        return []

    def transfer(self, now: float, conversation_id: str, agent_id: str, skill: str) -> list[float]:
        task = self.tasks[conversation_id]
        self._free(now, task)
        task.excluded.add(agent_id)
        task.since = now
        self._requeue(task)
        return self.wakes(now)

    def resolve(self, now: float, conversation_id: str, agent_id: str | None) -> list[float]:
        task = self.tasks.pop(conversation_id)
        self.waiting.pop(conversation_id, None)
        self._free(now, task)
        return []

    def route(self, now: float) -> tuple[list[Action], list[float]]:
        actions: list[Action] = []
        for task in [t for t in self.tasks.values() if t.expires and t.expires <= now]:
            assert task.holder is not None
            actions.append(Expired(task.arrival.conversation_id, task.holder))
            task.excluded.add(task.holder)
            self._free(now, task)
            self._requeue(task)
        if not self.dirty:
            return actions, []
        self.dirty = False
        wakes: list[float] = []
        open_channels = {c for w in self.workers.values() for c in w.agent.capacity if w.room(c)}
        for task in self.order(now):
            channel = task.arrival.channel
            if channel not in open_channels:
                continue
            worker = self.select(now, task)
            if worker is None:
                continue
            self._take(now, task, worker)
            cid, aid = task.arrival.conversation_id, worker.agent.agent_id
            if self.reserves and channel in self.scenario.router.offer_channels:
                task.expires = now + self.scenario.router.offer_timeout_seconds
                wakes.append(task.expires)
                actions.append(Offer(cid, aid))
            else:
                actions.append(Assign(cid, aid))
            if not worker.room(channel) or channel in worker.exclusive:  # a call closes her other channels
                open_channels = {c for w in self.workers.values() for c in w.agent.capacity if w.room(c)}
        return actions, wakes

    # --- what each baseline decides ----------------------------------------------------------

    def wakes(self, now: float) -> list[float]:
        return []

    def order(self, now: float) -> list[_Task]:
        return list(self.waiting.values())

    def select(self, now: float, task: _Task) -> _Worker | None:
        raise NotImplementedError

    # --- bookkeeping ---------------------------------------------------------------------

    def _take(self, now: float, task: _Task, worker: _Worker) -> None:
        channel = task.arrival.channel
        worker.load[channel] = worker.load.get(channel, 0) + 1
        worker.last_work = now
        task.holder = worker.agent.agent_id
        self.waiting.pop(task.arrival.conversation_id, None)

    def _free(self, now: float, task: _Task) -> None:
        if task.holder is None:
            return
        worker = self.workers[task.holder]
        channel = task.arrival.channel
        worker.load[channel] -= 1
        if worker.total() == 0:
            worker.last_work = now
        task.holder = None
        task.expires = 0.0
        self.dirty = True

    def _requeue(self, task: _Task) -> None:
        self.waiting[task.arrival.conversation_id] = task
        # Keep arrival order (a returned conversation keeps its place).
        self.waiting = dict(sorted(self.waiting.items(), key=lambda item: item[1].arrival.at))
        self.dirty = True


class ChatwootRoundRobin(_Baseline):
    name = "chatwoot"

    def start(self, agents: list[Agent]) -> None:
        super().start(agents)
        # One rotation per inbox (channel), of its members in roster order.
        channels = sorted({c for a in agents for c in a.capacity})
        self.rotation = {c: [a.agent_id for a in agents if a.capacity.get(c, 0) > 0] for c in channels}

    def select(self, now: float, task: _Task) -> _Worker | None:
        rotation = self.rotation.get(task.arrival.channel, [])
        for n, agent_id in enumerate(rotation):
            worker = self.workers[agent_id]
            if agent_id not in task.excluded and worker.room(task.arrival.channel):
                rotation.append(rotation.pop(n))  # to the back of the rotation
                return worker
        return None


class RocketChatLoadBalancing(_Baseline):
    name = "rocketchat"

    def select(self, now: float, task: _Task) -> _Worker | None:
        channel, skill = task.arrival.channel, task.arrival.skill
        members = [w for w in self.workers.values() if skill in w.agent.skills]
        if not members:
            members = list(self.workers.values())  # no department for this topic: everyone
        fits = [w for w in members if w.agent.agent_id not in task.excluded and w.room(channel)]
        # Lowest count of open chats; ties to the first in order (the roster's).
        return min(fits, key=lambda w: w.total(), default=None)


RELAX_SKILL_AFTER = 60.0
ANY_LANGUAGE_AFTER = 180.0


class TaskRouterSkills(_Baseline):
    name = "taskrouter"
    reserves = True

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.relaxing: list[float] = []  # heap of times a waiting task moves to its next target

    def wakes(self, now: float) -> list[float]:
        times = [now + RELAX_SKILL_AFTER, now + ANY_LANGUAGE_AFTER]
        for t in times:
            heapq.heappush(self.relaxing, t)
        return times

    def route(self, now: float) -> tuple[list[Action], list[float]]:
        while self.relaxing and self.relaxing[0] <= now:
            heapq.heappop(self.relaxing)
            self.dirty = True  # a target timed out: more workers may match
        return super().route(now)

    def _priority(self, arrival: Arrival) -> int:
        policy = self.scenario.router
        rule = policy.customer_tiers.get(arrival.tier)
        return (rule.priority_boost if rule else 0) + (policy.flag_priority if arrival.flagged else 0)

    def _min_tier(self, arrival: Arrival) -> int:
        policy = self.scenario.router
        rule = policy.customer_tiers.get(arrival.tier)
        tier = rule.min_agent_tier if rule else 1
        return max(tier, policy.flag_min_tier) if arrival.flagged else tier

    def order(self, now: float) -> list[_Task]:
        return sorted(self.waiting.values(), key=lambda t: (-self._priority(t.arrival), t.arrival.at))

    def select(self, now: float, task: _Task) -> _Worker | None:
        arrival = task.arrival
        waited = now - task.since
        best: _Worker | None = None
        for worker in self.workers.values():
            agent = worker.agent
            if agent.agent_id in task.excluded or not worker.room(arrival.channel):
                continue
            level = agent.skills.get(arrival.skill, 0)
            if level < (arrival.level if waited < RELAX_SKILL_AFTER else 1):
                continue
            if waited < ANY_LANGUAGE_AFTER and (
                arrival.language not in agent.languages or agent.tier < self._min_tier(arrival)
            ):
                continue
            if best is None or (worker.last_work, agent.agent_id) < (best.last_work, best.agent.agent_id):
                best = worker
        return best


def baseline(name: str, scenario: Scenario) -> _Baseline:
    kinds: dict[str, type[_Baseline]] = {
        "chatwoot": ChatwootRoundRobin,
        "rocketchat": RocketChatLoadBalancing,
        "taskrouter": TaskRouterSkills,
    }
    return kinds[name](scenario)
