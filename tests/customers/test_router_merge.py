"""The router after a merge: the merged customer's open conversations, case owner, tier and
flags follow the survivor (pure: folded from an in-memory log)."""

from __future__ import annotations

from events.model import ConversationResolved, CustomerProfileUpdated, CustomersMerged
from router import snapshot
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, holder

POLICY = RouterPolicy(offer_channels=(), escalation_steps=(), case_owner_wait_seconds=30)


def merge(survivor: str, merged: str, when: float) -> CustomersMerged:
    return CustomersMerged(at=at(when), customer_id=survivor, merged_id=merged, actor="operator")


def test_case_ownership_follows_the_survivor() -> None:
    """Bob served customer 'b'; after 'b' is merged into 'a', a's next conversation goes to Bob."""
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("first", customer_id="b", when=at(0), preferred_agent="bob"))
    log.step(at(1), POLICY)
    assert holder(log, "first") == "bob"
    log.append(ConversationResolved(at=at(10), customer_id="b", conversation_id="first"))
    log.append(merge("a", "b", 15))
    assert log.state.customer("b") is log.state.customer("a")
    log.extend(conversation("again", customer_id="a", when=at(20)))
    log.step(at(21), POLICY)
    assert holder(log, "again") == "bob"
    assert log.state.conversations["again"].reason.rule == "case_owner"  # type: ignore[union-attr]


def test_open_conversations_follow_the_survivor_and_keep_their_subject() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("open-b", customer_id="b", when=at(0)))
    log.step(at(1), POLICY)
    assert holder(log, "open-b") == "ava"
    log.append(merge("a", "b", 5))
    state = log.state
    assert state.customers["a"].open_conversations == {"open-b"}
    assert state.customers["b"].open_conversations == set()
    assert state.customers["b"].merged_into == "a"
    # The conversation keeps its own subject (rd.evt.c.b.open-b): router appends still go there.
    assert state.conversations["open-b"].customer_id == "b"
    # Ava holds an open case of the family: a's new conversation goes to her as case owner.
    log.extend(conversation("new-a", customer_id="a", channel="email", when=at(6)))
    log.step(at(7), POLICY)
    assert holder(log, "new-a") == "ava"
    assert state.conversations["new-a"].reason.rule == "case_owner"  # type: ignore[union-attr]
    log.append(ConversationResolved(at=at(8), customer_id="b", conversation_id="open-b"))
    assert state.customers["a"].open_conversations == {"new-a"}


def test_waiting_conversations_queue_with_the_survivors_tier_and_flags() -> None:
    log = Log()
    log.append(CustomerProfileUpdated(at=at(0), customer_id="a", tier="platinum", flags=("media_attention",)))
    log.extend(conversation("waiting-b", customer_id="b", when=at(1)))
    assert log.state.queue_signatures[log.state.conversations["waiting-b"].queue_key].customer_tier == "standard"
    log.append(merge("a", "b", 2))
    sig = log.state.queue_signatures[log.state.conversations["waiting-b"].queue_key]
    assert (sig.customer_tier, sig.flags) == ("platinum", ("media_attention",))
    # A later profile change of the survivor reaches the merged customer's waiting work too.
    log.append(CustomerProfileUpdated(at=at(3), customer_id="a", tier="gold"))
    sig = log.state.queue_signatures[log.state.conversations["waiting-b"].queue_key]
    assert sig.customer_tier == "gold"


def test_merges_of_merges_self_merges_cycles_and_second_merges_change_nothing_more() -> None:
    log = Log()
    for name in ("a", "b", "c", "d"):
        log.extend(conversation(f"conv-{name}", customer_id=name, when=at(0)))
    log.append(merge("b", "c", 1))  # c into b
    log.append(merge("a", "b", 2))  # b (with c) into a
    assert log.state.customer("c") is log.state.customer("a")
    assert log.state.customers["a"].open_conversations == {"conv-a", "conv-b", "conv-c"}
    log.append(merge("a", "a", 3))  # itself
    log.append(merge("c", "a", 4))  # a into its own family: a cycle
    log.append(merge("d", "b", 5))  # b was merged already: the first merge stands
    assert log.state.customers["a"].merged_into is None
    assert log.state.customers["b"].merged_into == "a"
    assert log.state.customers["d"].open_conversations == {"conv-d"}


def test_replay_and_snapshot_give_the_same_state() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("x", customer_id="b", when=at(0)))
    log.step(at(1), POLICY)
    log.append(merge("a", "b", 2))
    log.extend(conversation("y", customer_id="b", when=at(3)))  # a message that raced the merge
    replayed = log.replay()
    assert snapshot.dump(replayed) == snapshot.dump(log.state)
    assert snapshot.load(snapshot.dump(log.state)).customer("b") == log.state.customer("a")
    assert log.state.customers["a"].open_conversations == {"x", "y"}
