"""Telling the agents' tools that a customer was erased (``CustomerErased``), so they can drop
the copies Relaydesk's notices left there.

The erasure itself (``services.customers.erase``) reaches what Relaydesk keeps; the notices it
sent before went to tools it does not own. On ``CustomerErased`` the delivery service makes one
``customer.erased`` notice per endpoint that can act on it, and delivers it like any other
notice (a record in ``rd_deliveries``, retries, dead letters, signing): the erasure does not
wait for it.

- **webhook** endpoints, every one of them: the records that said which endpoint was told of
  which conversation were purged by the erasure itself (step "delivery records"), and whom an
  ``agent = "*"`` or team endpoint reached depends on who held what when. The notice carries
  ids only (customer, merged ids, conversation ids), so a receiver that never heard of the
  customer learns nothing it could use, and one that did can delete what it stored.
- **Slack app** endpoints: the posts of the family's conversations that Relaydesk still holds
  as erasable (``slack_refs``: kept ``ERASABLE_DAYS`` after their message's last state) are
  taken back (``SlackApp``): the customer's messages in a thread deleted (``chat.delete``, the
  bot's own posts), the conversation's message redrawn as ``[erased]`` (the channel still shows
  a conversation was there; agents' replies keep their parent), and their keys dropped.
  Incoming-webhook Slack posts (no ``ts`` to reach them by), Teams cards (routing facts only)
  and e-mail cannot be taken back: not notified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from nats.js import JetStreamContext

from events import subjects
from events.customer_conversations import conversation_ids
from events.model import CustomerErased
from events.store import StoredEvent
from services.delivery.notices import Notice
from services.delivery.records import DeliveryRecord
from services.delivery.settings import Endpoint
from services.metrics import ERASURE_NOTICES

log = structlog.get_logger(__name__)

NOTICE = "customer.erased"
# A notice is per agent (its record key names one); this one is for the endpoint, whoever it serves.
AGENT = "all"
ERASED_TEXT = "[erased]"


def notice(stored: StoredEvent) -> Notice | None:
    """The ``customer.erased`` notice of a ``CustomerErased`` (its conversation ids are read
    from the log before its records are made: ``with_conversations``)."""
    event = stored.event
    if not isinstance(event, CustomerErased) or not subjects.is_token(event.customer_id):
        return None
    merged = [m for m in event.merged_ids if subjects.is_token(m) and m != event.customer_id]
    body: dict[str, Any] = {
        "notice": NOTICE,
        "seq": stored.seq,
        "at": event.at.isoformat(),
        "customer_id": event.customer_id,
        "merged_ids": merged,
        "conversation_ids": [],
    }
    return Notice(AGENT, NOTICE, stored.seq, "", event.customer_id, body)


async def with_conversations(js: JetStreamContext, erased: Notice) -> None:
    """Fill in the conversation ids of the erased family (``events.customer_conversations``)."""
    if erased.body["conversation_ids"]:
        return
    erased.body["conversation_ids"] = await conversation_ids(js, (erased.customer_id, *erased.body["merged_ids"]))


def endpoints(all_endpoints: Mapping[str, Endpoint]) -> Iterable[tuple[str, Endpoint]]:
    """The endpoints that can act on an erasure: every webhook and every Slack app endpoint,
    whatever ``notices`` they list (a receiver's copy is not a matter of taste)."""
    return [(eid, e) for eid, e in all_endpoints.items() if e.kind == "webhook" or e.slack_app]


def counted(record: DeliveryRecord, bound: structlog.typing.FilteringBoundLogger) -> None:
    """Count an erasure notice's round once it ends; a failure names endpoint and customer."""
    if record.notice != NOTICE or record.status not in ("delivered", "failed"):
        return
    ERASURE_NOTICES.labels(kind=record.kind, outcome=record.status).inc()
    if record.status == "failed":
        bound.warning(
            "delivery.erasure_notice_failed",
            endpoint_id=record.endpoint_id,
            customer_id=record.customer_id,
            reason=record.reason,
            action="the tool still holds what it was told of this customer: fix the endpoint, then "
            f"POST /v1/deliveries/{record.id}/retry",
        )


def erased_message() -> tuple[str, list[dict[str, Any]]]:
    """What a Slack app message of an erased customer's conversation is redrawn as."""
    return ERASED_TEXT, [{"type": "section", "text": {"type": "mrkdwn", "text": ERASED_TEXT}}]
