"""An email's subject reaches the agent: on the timeline entry (erased with the customer), on
the conversation's JSON (from the API's workspace fold) and in the agent's email notice, but
not in notices to third-party tools (Slack, Teams, webhooks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from events.model import ConversationOpened, MessageReceived
from events.store import StoredEvent
from services.api.views import conversation_subject
from services.api.workspace import WorkspaceFacts
from services.delivery import render
from services.delivery.notices import Facts
from services.delivery.senders import Outcome, Senders
from services.delivery.settings import DeliverySettings, Endpoint
from services.timelines.fold import fold
from services.timelines.redact import ERASED, redact_entry

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
SUBJECT = "Rückfrage zur Rechnung 4711"


def opened(seq: int = 1) -> StoredEvent:
    event = ConversationOpened(
        at=T0, customer_id="cu1", conversation_id="cv1", channel="email", contact="jm@customer.test"
    )
    return StoredEvent(seq=seq, subject="rd.evt.c.cu1.cv1", event=event)


def received(seq: int, subject: str, **metadata: str) -> StoredEvent:
    event = MessageReceived(
        at=T0,
        customer_id="cu1",
        conversation_id="cv1",
        channel="email",
        message_id=f"m{seq}",
        provider_message_id=f"p{seq}@customer.test",
        text="Die Rechnung stimmt nicht.",
        metadata={"subject": subject, **metadata} if subject else dict(metadata),
    )
    return StoredEvent(seq=seq, subject="rd.evt.c.cu1.cv1", event=event)


def test_the_timeline_entry_carries_the_subject_and_erasure_removes_it() -> None:
    entry = fold(received(2, SUBJECT)).entry
    assert entry is not None and entry.detail is not None
    assert entry.detail["subject"] == SUBJECT
    erased = redact_entry(entry)
    assert erased.detail is not None and erased.detail["subject"] == ERASED
    no_subject = fold(received(3, "")).entry
    assert no_subject is not None and "subject" not in (no_subject.detail or {})


def test_the_conversation_json_has_the_first_email_subject() -> None:
    facts = WorkspaceFacts(None)
    for stored in (opened(), received(2, SUBJECT), received(3, "Re: " + SUBJECT)):
        facts.apply(stored)
    assert conversation_subject(facts, "cv1") == SUBJECT
    assert conversation_subject(facts, "cv_unknown") is None


def test_only_the_email_notice_names_the_subject() -> None:
    facts = Facts(console_url="http://console.test", api_url="http://api.test")
    facts.apply(opened())
    facts.apply(received(2, SUBJECT))
    facts.apply(received(3, "Out of office", auto="auto-reply"))  # not what the customer wrote
    notice = facts._notice("offer", "ava", received(4, SUBJECT), "cv1", "cu1")
    assert notice.body["subject"] == SUBJECT
    mail = render.email(notice.body, sender="relaydesk@support.test", to="ava@support.test", delivery_id="d1")
    assert f"Subject: {SUBJECT}" in mail.get_content()
    assert SUBJECT not in str(mail["Subject"])  # the notice's own subject line stays generic


async def test_webhooks_are_not_given_the_subject() -> None:
    seen: dict[str, dict[str, Any]] = {}

    class Recording(Senders):
        async def _webhook(self, endpoint: Endpoint, delivery_id: str, body: dict[str, Any]) -> Outcome:
            seen["webhook"] = body
            return Outcome(True, False)

        async def _email(self, endpoint: Endpoint, delivery_id: str, body: dict[str, Any]) -> Outcome:
            seen["email"] = body
            return Outcome(True, False)

    senders = Recording(DeliverySettings())
    body = {"notice": "offer", "subject": SUBJECT, "conversation": {"id": "cv1"}}
    await senders.send(Endpoint(kind="webhook", url="http://hooks.test/x"), "d1", body)
    await senders.send(Endpoint(kind="email", address="ava@support.test"), "d2", body)
    await senders.close()
    assert "subject" not in seen["webhook"]
    assert seen["email"]["subject"] == SUBJECT
