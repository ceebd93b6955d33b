"""The queue read model behind GET /v1/queues."""

from __future__ import annotations

import math

from events.model import ConversationResolved
from router.policy import RouterPolicy
from router.queues import held_summaries, queue_depth, queue_summaries
from tests.unit.router.helpers import Log, agent, at, conversation

POLICY = RouterPolicy(offer_channels=(), escalation_steps=())


def three_queues(email_at: int) -> Log:
    """Chat at priority 0 (c1, c2) and 2 (c3), email (e1)."""
    log = Log()
    log.extend(conversation("c1", channel="chat", when=at(0)))
    log.extend(conversation("c2", channel="chat", when=at(40)))
    log.extend(conversation("c3", channel="chat", when=at(25), priority=2))
    log.extend(conversation("e1", channel="email", when=at(email_at)))
    return log


def test_waiting_per_signature_with_oldest_wait_and_sla_risk() -> None:
    log = three_queues(email_at=0)
    summaries = queue_summaries(log.state, at(70).timestamp(), POLICY)
    assert [(q.channel, q.priority, q.waiting) for q in summaries] == [("chat", 2, 1), ("chat", 0, 2), ("email", 0, 1)]
    chat = summaries[1]
    assert chat.oldest_wait_seconds == 70
    assert (chat.sla_breached, chat.sla_at_risk) == (1, 0)  # c1 is past 60 s; c2 has 30 s of 60 left
    assert summaries[0].sla_at_risk == 1  # c3: 15 s left of 60, within the last 25%
    assert summaries[2].sla_breached == 0


def test_a_channel_without_an_sla_puts_nothing_at_risk_and_its_own_due_time_counts() -> None:
    """Found by an integrator: every conversation waiting on a channel without an SLA (a new
    channel's default, or ``inf``) was counted at risk (``inf <= 0.25 * inf``)."""
    policy = RouterPolicy(offer_channels=(), escalation_steps=(), sla_seconds={"chat": math.inf})
    log = Log()
    log.extend(conversation("c1", channel="chat", when=at(0)))
    log.extend(conversation("f1", channel="forms", when=at(0)))
    log.extend(conversation("c2", channel="chat", when=at(0), priority=1, sla_due=at(100)))  # 20 s of 100 left
    summaries = queue_summaries(log.state, at(80).timestamp(), policy)
    assert [(q.channel, q.waiting, q.sla_at_risk, q.sla_breached) for q in summaries] == [
        ("chat", 1, 1, 0),
        ("chat", 1, 0, 0),
        ("forms", 1, 0, 0),
    ]


def test_the_router_gauges_depth_is_the_summary_waiting_and_oldest_wait() -> None:
    log = three_queues(email_at=5)
    log.append(ConversationResolved(at=at(50), customer_id="cu-c1", conversation_id="c1"))  # its entry stays, stale
    now = at(70).timestamp()
    summaries = queue_summaries(log.state, now, POLICY)
    assert [queue_depth(log.state, q.key, now) for q in summaries] == [
        (q.waiting, q.oldest_wait_seconds) for q in summaries
    ]
    assert sorted(queue_depth(log.state, q.key, now) for q in summaries) == [(1, 30.0), (1, 45.0), (1, 65.0)]
    assert queue_depth(log.state, "no such queue", now) == (0, 0.0)


def test_conversations_held_for_their_case_owner_are_listed_per_agent() -> None:
    log = Log()
    log.extend(agent("bob", capacity={"chat": 1}))
    log.extend(conversation("c0", customer_id="k", when=at(0)))
    log.step(at(1), POLICY)
    log.extend(conversation("c1", customer_id="k", when=at(2)))
    [held] = held_summaries(log.state, at(10).timestamp())
    assert (held.agent_id, held.waiting, held.oldest_wait_seconds) == ("bob", 1, 8)
    log.append(ConversationResolved(at=at(11), customer_id="k", conversation_id="c0"))
    log.step(at(12), POLICY)
    assert held_summaries(log.state, at(13).timestamp()) == []
