"""A hand-written event log with known figures, shared by the report tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from events.model import (
    AgentOffered,
    Channel,
    ConversationAssigned,
    ConversationOpened,
    ConversationResolved,
    ConversationTransferred,
    CustomerCreated,
    DecisionReason,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
REASON = DecisionReason(rule="best_fit")
SLA = {"chat": 60.0, "sms": 300.0, "social": 900.0, "email": 14_400.0}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Conv:
    """Builds one conversation's events at given offsets from T0 (seconds)."""

    customer: str
    conversation: str
    channel: Channel
    events: list[LogEvent] = field(default_factory=list)

    def _ids(self, t: float) -> dict[str, object]:
        return {"at": at(t), "customer_id": self.customer, "conversation_id": self.conversation}

    def open(self, t: float, skills: dict[str, int] | None = None, sla_due: datetime | None = None) -> Conv:
        self.events += [
            ConversationOpened(**self._ids(t), channel=self.channel, contact="+15550000000"),  # type: ignore[arg-type]
            MessageReceived(
                **self._ids(t),  # type: ignore[arg-type]
                channel=self.channel,
                message_id=f"m-{self.conversation}-{t}",
                provider_message_id=f"p-{self.conversation}-{t}",
                text="hello",
            ),
            RoutingRequested(
                **self._ids(t),  # type: ignore[arg-type]
                channel=self.channel,
                requirements=Requirements(skills=skills or {}, sla_due=sla_due),
            ),
        ]
        return self

    def offer(self, t: float, agent: str) -> Conv:
        self.events.append(
            AgentOffered(**self._ids(t), agent_id=agent, expires_at=at(t + 30), reason=REASON)  # type: ignore[arg-type]
        )
        return self

    def accept(self, t: float, agent: str) -> Conv:
        self.events.append(OfferAccepted(**self._ids(t), agent_id=agent))  # type: ignore[arg-type]
        return self

    def decline(self, t: float, agent: str) -> Conv:
        self.events.append(OfferDeclined(**self._ids(t), agent_id=agent))  # type: ignore[arg-type]
        return self

    def expire(self, t: float, agent: str) -> Conv:
        self.events.append(OfferExpired(**self._ids(t), agent_id=agent))  # type: ignore[arg-type]
        return self

    def assign(self, t: float, agent: str) -> Conv:
        self.events.append(
            ConversationAssigned(**self._ids(t), agent_id=agent, channel=self.channel, reason=REASON)  # type: ignore[arg-type]
        )
        return self

    def reply(self, t: float, agent: str) -> Conv:
        rid = f"r-{self.conversation}-{t}"
        self.events += [
            ReplyRequested(**self._ids(t), channel=self.channel, reply_id=rid, agent_id=agent, text="hi"),  # type: ignore[arg-type]
            MessageSent(**self._ids(t + 2), channel=self.channel, reply_id=rid),  # type: ignore[arg-type]
        ]
        return self

    def transfer(self, t: float, from_agent: str, to_agent: str) -> Conv:
        self.events.append(
            ConversationTransferred(**self._ids(t), from_agent=from_agent, to_agent=to_agent)  # type: ignore[arg-type]
        )
        return self

    def resolve(self, t: float, agent: str | None = None) -> Conv:
        self.events.append(ConversationResolved(**self._ids(t), agent_id=agent))  # type: ignore[arg-type]
        return self


NOW = at(8 * 3600)


def scenario(prefix: str = "") -> list[LogEvent]:
    """Four conversations (figures in tests/reports/test_metrics.py):

    A  c1 sms billing: declined by ava, expired for bruno, accepted by chen at +100 s (SLA 300 s: met),
       reply at +160 s, resolved at +1000 s; the customer writes again by SMS one hour later (B).
    B  c1 sms billing, explicit SLA due 60 s: assigned to ava after 100 s (breached), reply after
       120 s, transferred to chen, resolved 1300 s after its assignment.
    C  c2 chat: offered to ava, accepted after 20 s (met), reply after 30 s, resolved at +600 s: FCR.
    D  c3 email: never assigned; past its 4 h SLA at NOW (breached).
    """
    c1, c2, c3 = f"{prefix}c1", f"{prefix}c2", f"{prefix}c3"
    created = [
        CustomerCreated(at=at(0), customer_id=c1, identity="sms:+15550000001"),
        CustomerCreated(at=at(0), customer_id=c2, identity="chat:v2"),
        CustomerCreated(at=at(0), customer_id=c3, identity="email:c3@example.com"),
    ]
    a = (
        Conv(c1, f"{prefix}A", "sms")
        .open(0, {"billing": 1})
        .offer(10, "ava")
        .decline(40, "ava")
        .offer(50, "bruno")
        .expire(80, "bruno")
        .offer(90, "chen")
        .accept(100, "chen")
        .reply(160, "chen")
        .resolve(1000, "chen")
    )
    b = (
        Conv(c1, f"{prefix}B", "sms")
        .open(4600, {"billing": 1}, sla_due=at(4660))
        .assign(4700, "ava")
        .reply(4720, "ava")
        .transfer(5000, "ava", "chen")
        .assign(5010, "chen")
        .resolve(6000, "chen")
    )
    c = (
        Conv(c2, f"{prefix}C", "chat")
        .open(7200, {"general": 1})
        .offer(7205, "ava")
        .accept(7220, "ava")
        .reply(7230, "ava")
        .resolve(7800, "ava")
    )
    d = Conv(c3, f"{prefix}D", "email").open(7300)
    return [*created, *a.events, *b.events, *c.events, *d.events]
