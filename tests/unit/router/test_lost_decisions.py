"""A decision the runner could not append (the customer wrote in the meantime, so the
expected sequence no longer matched) must not cost anyone their next chance: the agent it
named is looked at again, and work that lost out to it this round is found."""

from __future__ import annotations

from events.model import AgentOffered, ConversationResolved, ConversationTransferred, MessageReceived
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder


def test_an_agent_named_in_a_decision_lost_to_a_conflict_gets_other_work() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(conversation("held", when=at(0)))
    log.extend(conversation("other", when=at(1)))
    log.step(at(1))  # ava takes 'held' (the older one) ...
    log.append(ConversationResolved(at=at(2), customer_id="cu-held", conversation_id="held"))
    log.step(at(3))  # ... and, once it is resolved, 'other'
    assert holder(log, "other") == "ava"

    # Now with a decision that never lands: 'next' is transferred to ava by name, so it is
    # held for her; the round offers it to her; the customer writes before the offer is
    # appended, and the conversation is then resolved. Ava's slot was never used.
    log.append(ConversationResolved(at=at(4), customer_id="cu-other", conversation_id="other"))
    log.extend(conversation("next", when=at(5)))
    log.append(
        ConversationTransferred(
            at=at(5), customer_id="cu-next", conversation_id="next", to_agent="ava", transfer_count=1
        )
    )
    log.extend(conversation("waiting", when=at(6)))
    lost = log.decide(at(7))
    assert [e.conversation_id for e in events_of(lost, AgentOffered)] == ["next"]
    log.append(
        MessageReceived(
            at=at(7),
            customer_id="cu-next",
            conversation_id="next",
            channel="chat",
            message_id="m",
            provider_message_id="p",
        )
    )  # the offer's expected sequence is stale now: the runner's append is refused
    log.append(ConversationResolved(at=at(8), customer_id="cu-next", conversation_id="next"))
    log.step(at(9))
    assert holder(log, "waiting") == "ava"
