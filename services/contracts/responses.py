"""The shapes of the API's JSON answers, as msgspec types.

The handlers build their answers as dicts (``services.api.views`` and friends); these Structs
describe them for the OpenAPI document, and ``tests/agents/test_openapi_responses.py`` converts
real answers into them, so a handler that changes a shape breaks a test rather than the
document silently lying. Unknown keys are allowed (msgspec's default): an answer may carry
more than is declared, never less. Where the code already has a Struct or dataclass for the
shape (``QueueSummary``, ``TimelineEntry``, ``ErasureReport``, ``DeliveryRecord``), it is used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from events.model import DecisionReason, LanguageReason, Requirements
from router.explain import ExplainedQueue, WaitingBecause
from router.queues import HeldSummary
from services.api.customer_panel import PanelConversation
from services.customers.erase import ErasureReport
from services.delivery.records import DeliveryRecord
from services.timelines.rows import CustomerSummary, TimelineEntry

__all__ = [
    "Agent",
    "AgentList",
    "AgentMe",
    "AgentWork",
    "CommandResult",
    "Conversation",
    "ConversationList",
    "Customer",
    "CustomerList",
    "Delivery",
    "DeliveryList",
    "Dropped",
    "Effective",
    "ErasureReport",
    "Error",
    "Health",
    "IssuedToken",
    "LinkResult",
    "MergeResult",
    "Parked",
    "ParkedList",
    "ProfileResult",
    "Queues",
    "Readiness",
    "Retried",
    "ServiceReport",
    "Timeline",
    "TokenList",
    "TokenRecord",
    "WorkCustomer",
    "WorkItem",
]


class Error(msgspec.Struct, kw_only=True):
    """Every refusal: ``{"error": reason}``, sometimes with keys that help (``hint``,
    ``conversation_status``, ``merged_into``, ``customer_id``, ``channels``...)."""

    error: str
    hint: str | None = None


class Health(msgspec.Struct, kw_only=True):
    status: str


class ViewProgress(msgspec.Struct, kw_only=True):
    caught_up: bool
    position: int
    log_end_at_start: int | None = None
    snapshot_seq: int | None = None
    rereads: int = 0
    log_end: int | None = None
    lag_events: int | None = None  # log_end - position, when NATS answered


class Readiness(msgspec.Struct, kw_only=True):
    """``/readyz``: 200 ``ready`` or 503 ``not ready`` with the reason: NATS or the streams
    away, the view not caught up yet, or a view that has fallen behind the log (an end of the
    log left unreached for ``[api] view_stale_seconds``). ``intake`` and ``projection`` (the
    timelines' checkpoints and lag) are detail: they never make the API unready."""

    status: str
    nats_connected: bool
    streams: bool
    view: ViewProgress
    intake: dict[str, Any]
    projection: dict[str, Any] = {}
    reason: str | None = None


class Agent(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: str
    active: bool  # false once deactivated (DELETE /v1/agents/{id})
    tier: int
    skills: dict[str, int]
    languages: dict[str, int]
    capacity: dict[str, int]
    max_total: int | None
    voice: str = ""  # where calls ring (connectors.voice): client:<id>, sip:<uri>, +E164; "" none
    load: dict[str, int]
    occupancy: float
    holding: list[str]


class AgentList(msgspec.Struct, kw_only=True):
    agents: list[Agent]
    count: int  # on this page
    total: int  # every agent
    next_cursor: str | None  # ?cursor= for the next page; null: the last one


class Effective(msgspec.Struct, kw_only=True):
    """What the router applies now, after tier, flags, transfers and escalation steps."""

    skills: dict[str, int]
    languages: list[str] | None
    min_tier: int
    priority: int
    customer_tier: str
    flags: list[str]
    excluded_agents: list[str]


class Conversation(msgspec.Struct, kw_only=True):
    """An open conversation from the routing view, or a resolved one from the timelines
    (then ``requirements``, ``effective`` and the offer fields are absent and the summary
    fields are there). A command that resolved it answers just ``id`` and ``status``."""

    id: str
    status: str
    customer_id: str | None = None
    channel: str | None = None
    agent_id: str | None = None
    public: bool | None = None
    requirements: Requirements | None = None
    reason: DecisionReason | None = None
    transfer_count: int = 0
    escalation_step: int | None = None
    opened_at: datetime | None = None
    waiting_since: datetime | None = None
    offer_expires_at: datetime | None = None
    effective: Effective | None = None
    # Waiting or offered: eligible agents and the first blocking requirement (null otherwise).
    waiting_because: WaitingBecause | None = None
    # GET /v1/conversations/{id}: why ``requirements.language`` (each piece of evidence, weighed).
    language_reason: LanguageReason | None = None
    last_activity_at: datetime | None = None
    resolved_at: datetime | None = None
    message_count: int | None = None
    last_seq: int | None = None


class ConversationList(msgspec.Struct, kw_only=True):
    conversations: list[Conversation]
    count: int  # on this page
    # Open conversations only: every one that matches.
    total: int | msgspec.UnsetType = msgspec.UNSET
    # ?cursor= for the next page (null: the last one); open conversations and status=resolved
    # (not an agent token's own list).
    next_cursor: str | msgspec.UnsetType | None = msgspec.UNSET


class CommandResult(msgspec.Struct, kw_only=True):
    """A conversation command's answer: the event's log sequence and the conversation now."""

    seq: int
    conversation: Conversation


class Queues(msgspec.Struct, kw_only=True):
    queues: list[ExplainedQueue]
    held_for_agents: list[HeldSummary]
    total_waiting: int
    # When this board was computed: it is shared for a few seconds (services.api.queue_board).
    as_of: str


class WorkCustomer(msgspec.Struct, kw_only=True):
    """Who the customer is, for the console's work list (services.api.workspace)."""

    name: str | None
    address: str | None  # masked: "+1 •••• 0142", "a•••@example.com"
    tier: str
    flags: list[str]


class WorkItem(Conversation, kw_only=True):
    customer_tier: str = "standard"
    customer_flags: list[str] = []
    customer: WorkCustomer | None = None
    preview: str | None = None  # the customer's last message, first 80 characters
    subject: str | None = None  # the email subject, when the conversation came by email


class AgentWork(msgspec.Struct, kw_only=True):
    agent: Agent
    offers: list[WorkItem]
    assigned: list[WorkItem]
    seq: int


class AgentMe(msgspec.Struct, kw_only=True):
    """Who the token acts as; for an agent (or the operator with ``?agent=``) also its work."""

    actor: str
    operator: bool
    role: str = "operator"  # "operator", "supervisor" or "agent" (services.api.access)
    agent: Agent | None = None
    offers: list[WorkItem] = []
    assigned: list[WorkItem] = []
    seq: int | None = None


class Customer(CustomerSummary, frozen=True, kw_only=True):
    """A customer across every channel: the projection's ``CustomerSummary`` as served. Found by
    ``?identity=``, only ``customer_id`` and ``identity`` are given; an erased customer shows no
    identities and no CRM id."""

    identity: str | None = None
    # GET /v1/customers/{id} only: the console's customer panel (services.api.customer_panel).
    name: str | None = None
    crm_url: str | None = None
    conversations: list[PanelConversation] = []


class CustomerList(msgspec.Struct, kw_only=True):
    customers: list[Customer]
    count: int | None = None


class Timeline(msgspec.Struct, kw_only=True):
    customer_id: str
    entries: list[TimelineEntry]
    next_after: int | None


class ProfileResult(msgspec.Struct, kw_only=True):
    customer_id: str
    tier: str
    flags: list[str]
    preferred_language: str | None
    crm_id: str | None
    name: str | None = None


class LinkResult(msgspec.Struct, kw_only=True):
    customer_id: str
    identity: str
    linked: bool
    merged: str | None


class UnlinkResult(msgspec.Struct, kw_only=True):
    customer_id: str
    identity: str
    unlinked: bool  # written now
    already_unlinked: bool  # a retry: the log said so already (the index is made to agree)
    # The customer's conversations open on the address, resolved by this call (a retry: those
    # still open, none resolved twice): a reply to one would have gone to the address's new holder.
    conversations_resolved: int
    # The replies written before the unlink on the customer's conversations on the address (open
    # or resolved) that had no outcome, taken back by this call: DeliveryFailed on the log ("the
    # address was unlinked from the customer"), erased from RD_OUTBOUND. A retry: none twice.
    replies_withdrawn: int


class MergeResult(msgspec.Struct, kw_only=True):
    customer_id: str
    merged_id: str
    identities_moved: list[str]
    seq: int  # of the CustomersMerged event (the first one, when already_merged)
    already_merged: bool = False  # the same merge asked again: nothing new written


class TokenRecord(msgspec.Struct, kw_only=True):
    token_id: str
    agent_id: str
    label: str
    issued_at: datetime
    revoked: bool
    role: str = "agent"  # or "supervisor"


class IssuedToken(TokenRecord, kw_only=True):
    token: str
    note: str


class TokenList(msgspec.Struct, kw_only=True):
    tokens: list[TokenRecord]


class Delivery(DeliveryRecord, kw_only=True):
    """A delivery record; ``body`` (the notice sent) only when one record is asked for."""

    attempt_count: int = 0


class DeliveryList(msgspec.Struct, kw_only=True):
    deliveries: list[Delivery]
    count: int


class Parked(msgspec.Struct, kw_only=True):
    """A parked message; ``preview`` in lists, ``headers`` and ``data`` when one is asked for."""

    key: str
    kind: str
    stream: str
    seq: int
    subject: str
    reader: str
    error: str
    deliveries: int
    parked_at: datetime
    size: int
    retryable: bool
    preview: str | None = None
    headers: dict[str, str] | None = None
    data: str | None = None


class ParkedList(msgspec.Struct, kw_only=True):
    parked: list[Parked]
    count: int


class Retried(msgspec.Struct, kw_only=True):
    retried: Any


class Dropped(msgspec.Struct, kw_only=True):
    dropped: str


class ReportHour(msgspec.Struct, kw_only=True):
    hour: int
    conversations: int
    assigned: int
    mean_wait_seconds: float | None
    median_wait_seconds: float | None
    p90_wait_seconds: float | None
    sla_met: int
    sla_breached: int
    sla_attainment: float | None


class CustomerExport(msgspec.Struct, kw_only=True):
    """``services.customers.export``: every event of the family opened, oldest first."""

    format: int
    requested: str
    customer_id: str  # the survivor of the family
    customers: list[str]
    erased: bool
    exported_at: datetime
    profile: dict[str, Any]
    identities: list[str]
    events: list[dict[str, Any]]  # each event's own fields, with its seq and subject
    chat_history: list[dict[str, Any]]  # per chat address: its frames
    notes: str


class CannedReplyRemoved(msgspec.Struct, kw_only=True):
    id: str
    removed: bool  # false: it was gone already (a retry)


class ServiceReport(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """Totals, one row per group (``group_by``, a page of them) and the hourly series, as of
    ``as_of_seq``."""

    from_: datetime
    to: datetime
    tz: str  # the IANA time zone of the days, hours and the two bounds above
    group_by: str | None
    reopen_hours: float
    sla_seconds: dict[str, float]
    as_of_seq: int
    generated_at: datetime
    total: dict[str, Any] | None  # null on a page asked with ?cursor= (the first page has it)
    groups: list[dict[str, Any]]  # by key
    count: int  # groups on this page
    total_groups: int  # groups in the window, on every page
    next_cursor: str | None  # ?cursor= for the next page of groups; null: the last one
    by_hour: list[ReportHour] | None  # null on a page asked with ?cursor=
