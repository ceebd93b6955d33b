"""The discrete-event loop: a heap of timed events on a simulated clock.

The engine plays the people: customers arrive and abandon when their patience runs out
before an agent has them (Erlang-A); agents start and end shifts (at the end they go away:
no new work, they finish what they have), answer offers (accept, decline or let them expire
at the scenario's rates), hand off work they lack the skill or language for, and finish
each conversation after its handle time. The policy only says who gets what.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from services.simulator.arrivals import Agent, Arrival, roster, shift_periods
from services.simulator.metrics import AgentRecord, ConversationRecord, Run
from services.simulator.policy import Assign, Expired, Offer, Policy, SetAway
from services.simulator.scenario import Scenario

# Event kinds, in the order simultaneous events are handled.
SHIFT_END, SHIFT_START, BACK, COMPLETE, TRANSFER, ANSWER, ABANDON, ARRIVE, SAMPLE, WAKE = range(10)


@dataclass
class _Conversation:
    arrival: Arrival
    record: ConversationRecord
    status: str = "waiting"  # waiting, offered, serving, done
    agent_id: str | None = None
    epoch: int = 0  # bumped on every hand-over: timed events of an earlier holder are stale


@dataclass
class _Agent:
    agent: Agent
    record: AgentRecord
    on_shift: bool = False
    away: bool = False
    load: int = 0
    busy_since: float = 0.0
    serving: dict[str, float] = field(default_factory=dict)  # conversation id -> since


class Engine:
    def __init__(self, scenario: Scenario, arrivals: list[Arrival], policy: Policy) -> None:
        self.scenario = scenario
        self.arrivals = arrivals
        self.policy = policy
        # Offer answers are drawn per policy from the same seed: same scenario, same result.
        self.rng = random.Random(f"{scenario.simulation.seed}:{policy.name}")
        self.heap: list[tuple[float, int, int, object]] = []
        self.counter = 0
        self.conversations: dict[str, _Conversation] = {}
        self.agents = {a.agent_id: _Agent(a, AgentRecord(a.agent_id, a.tier, dict(a.skills))) for a in roster(scenario)}
        self.run = Run(policy=policy.name, scenario=scenario)
        self.waiting = 0
        self.wakes: set[float] = set()

    def _at(self, t: float, kind: int, data: object = None) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (t, kind, self.counter, data))

    def _wake(self, times: list[float]) -> None:
        for t in times:
            key = math.ceil(t * 1000.0) / 1000.0  # a wake-up a hair after the due time
            if key not in self.wakes:
                self.wakes.add(key)
                self._at(key, WAKE)

    def simulate(self) -> Run:
        sim = self.scenario.simulation
        horizon = sim.hours * 3600.0
        self.policy.start([a.agent for a in self.agents.values()])
        for agent in self.agents.values():
            for begin, end in shift_periods(agent.agent, sim.hours):
                self._at(begin, SHIFT_START, agent.agent.agent_id)
                self._at(end, SHIFT_END, agent.agent.agent_id)
        for arrival in self.arrivals:
            self._at(arrival.at, ARRIVE, arrival)
        t = 0.0
        while t < horizon:
            self._at(t, SAMPLE)
            t += sim.sample_seconds
        while self.heap:
            now = self.heap[0][0]
            while self.heap and self.heap[0][0] == now:
                _, kind, _, data = heapq.heappop(self.heap)
                self._handle(now, kind, data)
            self.wakes.discard(now)
            actions, wakes = self.policy.route(now)
            self._wake(wakes)
            for action in actions:
                self._act(now, action)
        for agent in self.agents.values():
            self.run.agents.append(agent.record)
        return self.run

    # --- the people ------------------------------------------------------------------

    def _handle(self, now: float, kind: int, data: object) -> None:
        if kind == ARRIVE:
            assert isinstance(data, Arrival)
            measured = data.at >= self.scenario.simulation.warmup_hours * 3600.0
            record = ConversationRecord.of(data, measured)
            self.conversations[data.conversation_id] = _Conversation(data, record)
            self.run.conversations.append(record)
            self.waiting += 1
            if math.isfinite(data.patience_seconds):
                self._at(now + data.patience_seconds, ABANDON, (data.conversation_id, 0))
            self._wake(self.policy.arrive(now, data))
        elif kind == WAKE:
            return  # only for the policy's look after this batch
        elif kind == SAMPLE:
            self.run.queue_samples.append((now, self.waiting))
        elif kind in (SHIFT_START, SHIFT_END, BACK):
            assert isinstance(data, str)
            self._shift(now, kind, self.agents[data])
        else:
            assert isinstance(data, tuple)
            conversation_id, epoch = data[0], data[1]
            conv = self.conversations[conversation_id]
            if conv.epoch != epoch or conv.status == "done":
                return  # handed over since, or already over
            if kind == ABANDON:
                if conv.status in ("waiting", "offered"):
                    self._abandon(now, conv)
            elif kind == ANSWER:
                self._answer(now, conv, accepted=bool(data[2]))
            elif kind == COMPLETE:
                self._release(now, conv)
                conv.status = "done"
                self._wake(self.policy.resolve(now, conversation_id, conv.agent_id))
            elif kind == TRANSFER:
                agent_id = conv.agent_id
                assert agent_id is not None
                self._release(now, conv)
                conv.record.transfers += 1
                conv.status, conv.agent_id = "waiting", None
                conv.epoch += 1
                self.waiting += 1
                self._wake(self.policy.transfer(now, conversation_id, agent_id, conv.arrival.skill))

    def _shift(self, now: float, kind: int, agent: _Agent) -> None:
        if kind in (SHIFT_START, SHIFT_END):
            self._account(now, agent, busy=agent.load > 0)  # busy so far: in or out of shift
        if kind == SHIFT_START:
            agent.on_shift, agent.away = True, False
            agent.record.shift_started = now
            self.policy.agent_status(now, agent.agent.agent_id, "available")
        elif kind == SHIFT_END:
            agent.on_shift = False
            agent.record.shift_seconds += now - agent.record.shift_started
            self.policy.agent_status(now, agent.agent.agent_id, "away")
        elif agent.on_shift and agent.away:  # BACK: after a while away for expired offers
            agent.away = False
            self.policy.agent_status(now, agent.agent.agent_id, "available")

    def _abandon(self, now: float, conv: _Conversation) -> None:
        conv.record.abandoned_at = now
        conv.status = "done"
        conv.epoch += 1
        self.waiting -= 1
        self._wake(self.policy.resolve(now, conv.arrival.conversation_id, None))

    def _answer(self, now: float, conv: _Conversation, *, accepted: bool) -> None:
        agent_id = conv.agent_id
        assert agent_id is not None
        self._wake(self.policy.answer_offer(now, conv.arrival.conversation_id, agent_id, accepted))
        if accepted:
            self._serve(now, conv, agent_id)
        else:
            conv.status, conv.agent_id = "waiting", None
            conv.epoch += 1

    # --- the policy's actions ----------------------------------------------------------

    def _act(self, now: float, action: object) -> None:
        match action:
            case Offer(conversation_id, agent_id):
                conv = self.conversations[conversation_id]
                conv.status, conv.agent_id = "offered", agent_id
                conv.epoch += 1
                conv.record.offers += 1
                offers = self.scenario.offers
                draw = self.rng.random()
                key = (conversation_id, conv.epoch)
                if draw < offers.decline_rate:
                    self._at(now + offers.decline_seconds, ANSWER, (*key, False))
                elif draw >= offers.decline_rate + offers.expire_rate:
                    self._at(now + offers.accept_seconds, ANSWER, (*key, True))
                # else: the agent lets it expire; the policy withdraws it (``Expired``).
            case Assign(conversation_id, agent_id):
                conv = self.conversations[conversation_id]
                conv.agent_id = agent_id
                conv.epoch += 1
                self._serve(now, conv, agent_id)
            case Expired(conversation_id, _):
                conv = self.conversations[conversation_id]
                if conv.status == "offered":
                    conv.status, conv.agent_id = "waiting", None
                    conv.epoch += 1
            case SetAway(agent_id):
                agent = self.agents[agent_id]
                agent.away = True
                self._at(now + self.scenario.offers.away_seconds, BACK, agent_id)

    def _serve(self, now: float, conv: _Conversation, agent_id: str) -> None:
        agent = self.agents[agent_id]
        arrival = conv.arrival
        record = conv.record
        fits_skill = agent.agent.skills.get(arrival.skill, 0) >= arrival.level
        fits_language = arrival.language in agent.agent.languages
        # On offer channels an agent takes ``accept_seconds`` to pick work up, offered or
        # assigned: a policy that assigns directly is not credited with a reaction time of 0.
        offered = conv.status == "offered" or arrival.channel not in self.scenario.router.offer_channels
        picked_up = now if offered else now + self.scenario.offers.accept_seconds
        if record.fit_at is None and fits_skill and fits_language:
            record.fit_at = picked_up
        if record.answered_at is None:
            record.answered_at = picked_up
            record.agent_id = agent_id
            record.skill_match = fits_skill
            record.language_match = fits_language
        conv.status = "serving"
        self.waiting -= 1
        if agent.load == 0:
            agent.busy_since = now
        agent.load += 1
        agent.serving[arrival.conversation_id] = now
        key = (arrival.conversation_id, conv.epoch)
        if not (fits_skill and fits_language) and record.transfers < self.scenario.transfers.max:
            self._at(now + self.scenario.transfers.after_seconds, TRANSFER, key)
        else:
            self._at(now + arrival.handle_seconds, COMPLETE, key)

    def _release(self, now: float, conv: _Conversation) -> None:
        assert conv.agent_id is not None
        agent = self.agents[conv.agent_id]
        since = agent.serving.pop(conv.arrival.conversation_id)
        agent.load -= 1
        if agent.load == 0:
            self._account(now, agent, busy=True)
        if agent.agent.tier >= 2 and conv.arrival.tier == "standard" and not conv.arrival.flagged:
            agent.record.frontline_seconds += now - since
        agent.record.work_seconds += now - since

    def _account(self, now: float, agent: _Agent, *, busy: bool) -> None:
        """Close the current stretch: if she was busy, count it on shift or as overtime
        (finishing work after the shift, which would otherwise inflate occupancy)."""
        if busy:
            if agent.on_shift:
                agent.record.busy_seconds += now - agent.busy_since
            else:
                agent.record.overtime_seconds += now - agent.busy_since
        agent.busy_since = now


def simulate(scenario: Scenario, arrivals: list[Arrival], policy: Policy) -> Run:
    return Engine(scenario, arrivals, policy).simulate()
