"""The cross-channel rule: a call takes the agent whole (``router.cross_channel``)."""

from __future__ import annotations

from events.model import AgentOffered, ConversationAssigned, ConversationResolved
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

VOICE_AND_CHAT = {"chat": 3, "voice": 1}
POLICY = RouterPolicy(offer_channels=("chat",))


def on_a_call(log: Log, policy: RouterPolicy = POLICY) -> None:
    log.extend(agent("ava", capacity=VOICE_AND_CHAT))
    log.extend(conversation("call", channel="voice"))
    [assigned] = events_of(log.step(at(0), policy), ConversationAssigned)
    assert (assigned.agent_id, assigned.channel) == ("ava", "voice")


def test_an_agent_on_a_call_gets_no_chat_offer() -> None:
    log = Log()
    on_a_call(log)
    log.extend(conversation("chat1", when=at(5)))
    assert events_of(log.step(at(5)), AgentOffered) == []
    assert events_of(log.step(at(50)), AgentOffered) == []
    assert holder(log, "chat1") is None


def test_when_the_call_ends_the_waiting_chat_is_offered_to_her() -> None:
    log = Log()
    on_a_call(log)
    log.extend(conversation("chat1", when=at(5)))
    log.step(at(5), POLICY)
    log.append(ConversationResolved(at=at(60), customer_id="cu-call", conversation_id="call", agent_id="ava"))
    [offer] = events_of(log.step(at(60), POLICY), AgentOffered)
    assert (offer.agent_id, offer.conversation_id) == ("ava", "chat1")


def test_a_free_colleague_gets_the_chat_meanwhile() -> None:
    log = Log()
    on_a_call(log)
    log.extend(agent("bea", capacity={"chat": 3}))
    log.extend(conversation("chat1", when=at(5)))
    [offer] = events_of(log.step(at(5), POLICY), AgentOffered)
    assert offer.agent_id == "bea"


def test_a_call_and_a_chat_in_one_round_do_not_both_go_to_her() -> None:
    log = Log()
    log.extend(agent("ava", capacity=VOICE_AND_CHAT))
    log.extend(conversation("call", channel="voice", priority=10))  # the call is routed first
    log.extend(conversation("chat1"))
    [assigned] = [d.event for d in log.step(at(0), POLICY)]
    assert isinstance(assigned, ConversationAssigned) and assigned.conversation_id == "call"


def test_by_default_an_agent_with_chats_still_gets_a_call() -> None:
    log = Log()
    log.extend(agent("ava", capacity=VOICE_AND_CHAT))
    log.extend(conversation("chat1"))
    log.step(at(0), POLICY)
    log.extend(conversation("call", channel="voice", when=at(1)))
    [assigned] = events_of(log.step(at(1), POLICY), ConversationAssigned)
    assert assigned.agent_id == "ava"


def test_a_limit_on_other_work_keeps_calls_for_agents_without_chats() -> None:
    policy = RouterPolicy(offer_channels=("chat",), exclusive_max_other_load=0)
    log = Log()
    log.extend(agent("ava", capacity=VOICE_AND_CHAT))
    log.extend(conversation("chat1"))
    log.step(at(0), policy)
    log.extend(conversation("call", channel="voice", when=at(1)))
    assert events_of(log.step(at(1), policy), ConversationAssigned) == []
    log.extend(agent("bea", capacity=VOICE_AND_CHAT, when=at(2)))
    [assigned] = events_of(log.step(at(2), policy), ConversationAssigned)
    assert assigned.agent_id == "bea"


def test_no_exclusive_channels_turns_the_rule_off() -> None:
    policy = RouterPolicy(offer_channels=("chat",), exclusive_channels=())
    log = Log()
    on_a_call(log, policy)
    log.extend(conversation("chat1", when=at(5)))
    [offer] = events_of(log.step(at(5), policy), AgentOffered)
    assert offer.agent_id == "ava"


def test_replay_gives_the_same_holders() -> None:
    log = Log()
    on_a_call(log)
    log.extend(conversation("chat1", when=at(5)))
    log.step(at(5))
    replayed = log.replay()
    assert {c: v.agent_id for c, v in replayed.conversations.items()} == {
        c: v.agent_id for c, v in log.state.conversations.items()
    }
