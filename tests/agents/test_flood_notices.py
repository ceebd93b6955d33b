"""A customer's flood pings its agent a few times, not once a message (the flood audit):
services/delivery/pacing.py through delivery's fold (services.delivery.notices.Facts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from events.model import (
    AgentOffered,
    ConversationOpened,
    DecisionReason,
    LogEvent,
    MessageReceived,
    OfferAccepted,
    Requirements,
    RoutingRequested,
)
from events.stored import StoredEvent
from services.delivery import render
from services.delivery.notices import Facts, Notice
from services.delivery.pacing import BURST, EVERY_S

AT = datetime(2026, 12, 8, tzinfo=UTC)


def assigned(customer: str, conversation: str, agent: str, at: datetime) -> list[LogEvent]:
    ids = {"customer_id": customer, "conversation_id": conversation}
    return [
        ConversationOpened(at=at, **ids, channel="chat", contact="visitor"),
        RoutingRequested(at=at, **ids, channel="chat", requirements=Requirements()),
        AgentOffered(
            at=at, **ids, agent_id=agent, expires_at=at + timedelta(minutes=1), reason=DecisionReason(rule="r")
        ),
        OfferAccepted(at=at, **ids, agent_id=agent),
    ]


def message(customer: str, conversation: str, n: int, at: datetime) -> MessageReceived:
    return MessageReceived(
        at=at,
        customer_id=customer,
        conversation_id=conversation,
        channel="chat",
        message_id=f"m-{conversation}-{n}",
        provider_message_id=f"p-{conversation}-{n}",
        text=f"spam {n}",
    )


class Log:
    def __init__(self) -> None:
        self.facts = Facts(console_url="http://c", api_url="http://a")
        self.seq = 0

    def apply(self, customer: str, conversation: str, events: list[LogEvent]) -> list[Notice]:
        out: list[Notice] = []
        for event in events:
            self.seq += 1
            out.extend(self.facts.apply(StoredEvent(self.seq, f"rd.evt.c.{customer}.{conversation}", event)))
        return out


def test_a_flood_pings_its_agent_a_few_times_and_says_how_many_messages_each_stands_for() -> None:
    log = Log()
    log.apply("cubot", "cvbot", assigned("cubot", "cvbot", "ava", AT))
    # 3,000 messages in 60 s from one customer (a bot on the web chat).
    flood = [message("cubot", "cvbot", n, AT + timedelta(seconds=n * 0.02)) for n in range(3000)]
    notices = log.apply("cubot", "cvbot", list(flood))
    told = [n for n in notices if n.kind == "message"]
    # The burst at once, then one every EVERY_S: not 3,000 Slack posts, mails and webhooks.
    assert BURST <= len(told) <= BURST + 60 / EVERY_S + 1
    assert [n.body["messages"] for n in told[:BURST]] == [1] * BURST
    assert sum(n.body["messages"] for n in told) <= 3000
    assert told[-1].body["messages"] > 1 and told[-1].body["preview"].startswith("spam ")

    # Meanwhile another customer of the same agent is offered, assigned and heard as ever.
    other = log.apply("cuann", "cvann", assigned("cuann", "cvann", "ava", AT + timedelta(seconds=30)))
    assert [n.kind for n in other] == ["offer", "accepted"]
    quick = [message("cuann", "cvann", n, AT + timedelta(seconds=31 + n)) for n in range(3)]
    assert [n.kind for n in log.apply("cuann", "cvann", list(quick))] == ["message"] * 3


def test_a_person_typing_quickly_pings_for_each_message() -> None:
    log = Log()
    log.apply("cu1", "cv1", assigned("cu1", "cv1", "ava", AT))
    lines = [message("cu1", "cv1", n, AT + timedelta(seconds=2 * n)) for n in range(BURST)]
    assert [n.body["messages"] for n in log.apply("cu1", "cv1", list(lines))] == [1] * BURST


def test_a_paced_notice_says_how_many_messages_it_stands_for() -> None:
    log = Log()
    log.apply("cubot", "cvbot", assigned("cubot", "cvbot", "ava", AT))
    flood = [message("cubot", "cvbot", n, AT + timedelta(seconds=n * 0.1)) for n in range(400)]
    told = [n for n in log.apply("cubot", "cvbot", list(flood)) if n.kind == "message"]
    many = told[-1].body
    assert many["messages"] > 1
    mail = render.email(many, sender="desk@support.test", to="ava@support.test", delivery_id="d1")
    for rendered in (json.dumps(render.slack(many)), mail.get_content()):
        assert f"{many['messages']} since the last notice" in rendered
    assert ("Messages", f"{many['messages']} since the last notice (the newest shown)") in render.facts(many)
    assert all(name != "Messages" for name, _ in render.facts(told[0].body))
