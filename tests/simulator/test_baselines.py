"""Each baseline on a tiny scenario, checked by hand against its documented behaviour."""

from __future__ import annotations

from typing import Any

from services.simulator.arrivals import Agent, Arrival
from services.simulator.baselines import ChatwootRoundRobin, RocketChatLoadBalancing, TaskRouterSkills
from services.simulator.policy import Assign, Expired, Offer
from services.simulator.scenario import parse


def scenario(**router: Any) -> Any:
    return parse(
        {
            "channels": {"chat": {"sla_seconds": 60, "handle_mean_seconds": 600}},
            "agents": [{"prefix": "unused"}],
            "router": router,
        }
    )


def agent(
    agent_id: str, *, skills: dict[str, int] | None = None, languages: tuple[str, ...] = ("en",), chat: int = 1
) -> Agent:
    return Agent(agent_id, skills or {"billing": 3}, {lang: 5 for lang in languages}, 1, {"chat": chat}, (0, 24))


def chat(n: int, at: float = 0.0, *, skill: str = "billing", level: int = 1, language: str = "en") -> Arrival:
    return Arrival(f"c{n}", at, "chat", language, skill, level, "standard", False, 600.0, float("inf"))


def online(policy: Any, agents: list[Agent]) -> None:
    policy.start(agents)
    for a in agents:
        policy.agent_status(0.0, a.agent_id, "available")


def test_chatwoot_rotates_through_online_agents_under_their_limit() -> None:
    policy = ChatwootRoundRobin(scenario(offer_channels=[]))
    online(policy, [agent("ava"), agent("bo"), agent("cy"), agent("di")])
    policy.agent_status(0.0, "di", "offline")  # never assigned while offline
    for n in range(1, 5):
        policy.arrive(float(n), chat(n, float(n)))
    actions, _ = policy.route(4.0)
    assert actions == [Assign("c1", "ava"), Assign("c2", "bo"), Assign("c3", "cy")]  # c4 waits: all at the limit
    policy.resolve(10.0, "c2", "bo")
    assert policy.route(10.0)[0] == [Assign("c4", "bo")]
    # The rotation is now ava, cy, bo: the next free one in that order gets the next chat.
    policy.resolve(11.0, "c1", "ava")
    policy.resolve(11.0, "c3", "cy")
    policy.arrive(12.0, chat(5, 12.0))
    assert policy.route(12.0)[0] == [Assign("c5", "ava")]


def test_rocketchat_gives_the_least_busy_agent_of_the_department() -> None:
    policy = RocketChatLoadBalancing(scenario(offer_channels=[]))
    online(
        policy,
        [
            agent("ava", chat=3),
            agent("bo", chat=3),
            agent("cy", chat=3),
            agent("tech", skills={"technical": 3}, chat=3),
        ],
    )
    for n in range(1, 4):
        policy.arrive(0.0, chat(n))
    # Equal counts: in order, then the lowest count again. "tech" is not in the billing department.
    assert policy.route(0.0)[0] == [Assign("c1", "ava"), Assign("c2", "bo"), Assign("c3", "cy")]
    policy.resolve(5.0, "c2", "bo")
    policy.arrive(6.0, chat(4, 6.0))
    assert policy.route(6.0)[0] == [Assign("c4", "bo")]  # the only one with no open chat


def test_taskrouter_relaxes_targets_with_time_and_picks_the_longest_idle() -> None:
    policy = TaskRouterSkills(scenario(offer_channels=["chat"], offer_timeout_seconds=30))
    online(
        policy,
        [
            agent("en", skills={"billing": 3}),
            agent("es-junior", skills={"billing": 1}, languages=("es", "en")),
            agent("es-senior", skills={"billing": 3}, languages=("es", "en")),
        ],
    )
    # Keep the senior busy, so at first nobody has billing >= 2 in Spanish with room.
    policy.arrive(0.0, chat(1, 0.0, language="es", level=2))
    assert policy.route(0.0)[0] == [Offer("c1", "es-senior")]
    policy.answer_offer(3.0, "c1", "es-senior", True)
    wakes = policy.arrive(10.0, chat(2, 10.0, language="es", level=2))
    assert policy.route(10.0)[0] == []
    assert 70.0 in wakes  # the first target times out after 60 s: any billing level
    assert policy.route(70.0)[0] == [Offer("c2", "es-junior")]
    # The reservation times out: that worker is not reserved for this task again, and
    # after 180 s anyone with the skill may take it (the English agent, idle the longest).
    actions, _ = policy.route(100.0)
    assert actions == [Expired("c2", "es-junior")]
    assert policy.route(190.0)[0] == [Offer("c2", "en")]


def test_taskrouter_serves_higher_priority_first() -> None:
    policy = TaskRouterSkills(scenario(offer_channels=[]))
    online(policy, [agent("ava")])
    policy.arrive(0.0, chat(1, 0.0))
    platinum = Arrival("vip", 1.0, "chat", "en", "billing", 1, "gold", False, 600.0, float("inf"))
    policy.agent_status(0.0, "ava", "away")
    policy.arrive(1.0, platinum)
    policy.agent_status(2.0, "ava", "available")
    assert policy.route(2.0)[0] == [Assign("vip", "ava")]
