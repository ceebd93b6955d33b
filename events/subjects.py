"""NATS names: streams, subjects and KV buckets (see the NATS layout in the design)."""

from __future__ import annotations

import re

from events.model import (
    AgentDeactivated,
    AgentProfileUpdated,
    AgentReactivated,
    AgentStatusChanged,
    AgentTokenIssued,
    AgentTokenRevoked,
    CustomerEvent,
    Event,
)

AGENT_FACTS = (
    AgentProfileUpdated,
    AgentStatusChanged,
    AgentDeactivated,
    AgentReactivated,
    AgentTokenIssued,
    AgentTokenRevoked,
)
INBOUND_STREAM = "RD_INBOUND"
# The durable pull consumer every intake process shares on it (services.intake).
INTAKE_DURABLE = "intake"
EVENTS_STREAM = "RD_EVENTS"
OUTBOUND_STREAM = "RD_OUTBOUND"
IDENTITY_BUCKET = "rd_identity"
LEASE_BUCKET = "rd_leases"
STATE_BUCKET = "rd_state"
SNAPSHOT_BUCKET = "rd_snapshots"

INBOUND_ALL = "rd.inbound.>"
EVENTS_ALL = "rd.evt.>"
CUSTOMER_EVENTS_ALL = "rd.evt.c.>"
AGENT_EVENTS_ALL = "rd.evt.a.>"
OUTBOUND_ALL = "rd.out.>"

# The token that stands where a conversation id would, for customer-level facts.
CUSTOMER_SCOPE = "_customer"

# The longest id a subject token may be (agent ids, customer ids, conversation ids).
TOKEN_MAX_LENGTH = 128
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{TOKEN_MAX_LENGTH}}}")


class InvalidToken(ValueError):
    pass


def is_token(value: str) -> bool:
    """Whether ``value`` may stand as one NATS subject token, as every id does."""
    return _TOKEN.fullmatch(value) is not None


def token(value: str) -> str:
    """A value safe to stand as one NATS subject token (ids are generated to fit)."""
    if not is_token(value):
        raise InvalidToken(f"not a valid subject token: {value!r}")
    return value


def inbound(channel: str) -> str:
    return f"rd.inbound.{token(channel)}"


def outbound(channel: str) -> str:
    return f"rd.out.{token(channel)}"


def conversation(customer_id: str, conversation_id: str) -> str:
    return f"rd.evt.c.{token(customer_id)}.{token(conversation_id)}"


def conversation_filter(conversation_id: str) -> str:
    """A conversation's subject whoever its customer (a wildcard: for a last-message get)."""
    return f"rd.evt.c.*.{token(conversation_id)}"


def customer_scope(customer_id: str) -> str:
    return conversation(customer_id, CUSTOMER_SCOPE)


def customer_filter(customer_id: str) -> str:
    return f"rd.evt.c.{token(customer_id)}.>"


def agent(agent_id: str) -> str:
    return f"rd.evt.a.{token(agent_id)}"


def for_event(event: Event) -> str:
    """The subject a log event belongs on."""
    if isinstance(event, AGENT_FACTS):
        return agent(event.agent_id)
    if isinstance(event, CustomerEvent):
        conversation_id = getattr(event, "conversation_id", CUSTOMER_SCOPE)
        return conversation(event.customer_id, conversation_id)
    raise TypeError(f"{type(event).__name__} has no place in {EVENTS_STREAM}")


def max_deliveries_advisory(stream: str, durable: str) -> str:
    """Where the server says a work consumer's message reached ``max_deliver`` without a term
    (``connectors.sdk.deadletter``: parked by every listener; the roles may subscribe to it)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"


def terminated_advisory(stream: str, durable: str) -> str:
    """Where the server says a work consumer's message was terminated, a held one deleted among
    them (``connectors.sdk.withdrawals``; the connector roles may subscribe to it)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{durable}"


def parse_conversation_subject(subject: str) -> tuple[str, str] | None:
    """(customer_id, conversation_id) for an ``rd.evt.c`` subject, else None."""
    parts = subject.split(".")
    if len(parts) == 5 and parts[:3] == ["rd", "evt", "c"]:
        return parts[3], parts[4]
    return None
