"""Pure pieces of the agents' side: signatures, backoff, rendering, settings, agent reach."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    MessageReceived,
    ReplyRequested,
)
from events.stored import StoredEvent
from router.fold import evolve
from router.state import ConversationView, RouterState
from services.api.auth import agent_refusal
from services.api.reply_routing import ReplyRoute, agent_name, deliver_command
from services.delivery import render
from services.delivery.attempts import backoff
from services.delivery.endpoints import endpoint_ids, settings_problems
from services.delivery.notices import Facts, mask_contact, preview
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.signing import sign, verify


def test_signature_is_hmac_sha256_of_t_dot_body() -> None:
    body = b'{"notice":"offer"}'
    header = sign("secret", body, t=1_700_000_000)
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("secret", header, body, now=1_700_000_100)
    assert not verify("secret", header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify("secret", header, body, now=1_700_000_000 + 301)  # too old: a replay
    # Whoever sends the request writes the header: non-ASCII is a refusal, not a TypeError.
    assert not verify("secret", "t=1700000000,v1=é", body, now=1_700_000_100)
    assert not verify("secret", "v1=abc", body)
    assert not verify("secret", "t=x,v1=abc", body)
    # Several v1 values (secret rotation on the sender's side): one match is enough.
    assert verify("secret", f"t=1700000000,v1=deadbeef,v1={expected}", body, now=1_700_000_000)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert backoff(1, 1.0, 60.0, rng=lambda: 1.0) == 1.0
    assert backoff(3, 1.0, 60.0, rng=lambda: 1.0) == 4.0
    assert backoff(10, 1.0, 60.0, rng=lambda: 1.0) == 60.0
    assert backoff(3, 1.0, 60.0, rng=lambda: 0.5) == 2.0
    assert backoff(3, 1.0, 60.0, rng=lambda: 0.0) == 0.0


def test_settings_problems_and_endpoint_ids() -> None:
    settings = DeliverySettings(
        teams={"billing": ("ava",)},
        endpoints=(
            Endpoint(kind="webhook", agent="ava", url="https://x.example/h", secret="s"),
            Endpoint(kind="webhook", agent="ava", url="ftp://x", secret=""),
            Endpoint(kind="slack", team="nope", url="https://hooks.slack.com/x"),
            Endpoint(kind="email", agent="*", address="nobody"),
            Endpoint(kind="slack", url="https://hooks.slack.com/x", id="bad id"),
        ),
    )
    assert list(endpoint_ids(settings))[:4] == ["ava-webhook-1", "ava-webhook-2", "nope-slack-3", "all-email-4"]
    problems = " | ".join(settings_problems(settings))
    assert "ava-webhook-1" not in problems
    for expected in (
        "ava-webhook-2: webhook needs an http(s) url",
        "ava-webhook-2: a webhook needs a secret",
        "no team 'nope'",
        "all-email-4: email needs an address",
        "endpoint id 'bad id'",
        "endpoint bad id: name an agent",
    ):
        assert expected in problems


def test_masking_and_preview() -> None:
    assert mask_contact("+15551234567") == "+155•••4567"
    assert mask_contact("jane@example.com") == "j•••@example.com"
    assert mask_contact("12") == "•••"
    assert mask_contact("[erased]") == "[erased]"  # an erased customer's, not an address
    assert preview("a\n\n b \nc\nd", 3) == "a\nb\nc"
    assert preview("x" * 400, 3).endswith("…")


NOTICE: dict[str, Any] = {
    "notice": "offer",
    "conversation": {"id": "cv1", "channel": "chat"},
    "customer": {"id": "cu1", "tier": "gold", "flags": ["media_attention"], "contact": "j•••@example.com"},
    "requirements": {"language": "es", "skills": {"billing": 2}},
    "wait_seconds": 75.0,
    "offer_expires_at": "2026-01-01T00:00:30+00:00",
    "preview": "Hola <b>\nnecesito ayuda",
    "links": {"console": "http://c/console#conversation=cv1", "accept": "http://c/console#accept=cv1"},
}


def test_slack_message_shows_the_facts_and_an_accept_link() -> None:
    message = render.slack(NOTICE)
    text = str(message)
    for expected in ("cu1", "chat", "gold · media_attention", "es", "billing ≥2", "1 min 15 s", "&lt;b&gt;"):
        assert expected in text
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert actions["elements"][0]["url"] == "http://c/console#accept=cv1"


def test_email_notification() -> None:
    mail = render.email(NOTICE, sender="rd@example.com", to="ava@example.com", delivery_id="dl-1")
    assert mail["Subject"] == "[Relaydesk] New offer: chat conversation cv1"
    assert mail["X-Relaydesk-Delivery"] == "dl-1"
    body = mail.get_content()
    assert "Accept: http://c/console#accept=cv1" in body and "necesito ayuda" in body


def test_agent_reach() -> None:
    state = RouterState()
    state.conversations["offered"] = ConversationView(customer_id="cu1", status="offered", agent_id="ava")
    state.conversations["assigned"] = ConversationView(customer_id="cu2", status="assigned", agent_id="ava")
    state.conversations["theirs"] = ConversationView(customer_id="cu3", status="offered", agent_id="bruno")
    state.conversations["waiting"] = ConversationView(customer_id="cu4", status="waiting")
    deps: Any = SimpleNamespace(live=SimpleNamespace(state=state), clock=lambda: datetime.now(UTC))

    def reach(method: str, path: str) -> str | None:
        return agent_refusal(deps, "ava", method, path)

    assert reach("POST", "/v1/conversations/offered/accept") is None
    assert reach("POST", "/v1/conversations/assigned/reply") is None
    assert reach("GET", "/v1/conversations/assigned") is None
    assert reach("POST", "/v1/conversations/assigned/accept") == "conversation assigned has no open offer for you"
    assert reach("POST", "/v1/conversations/theirs/accept") == "conversation theirs is not offered or assigned to you"
    assert reach("POST", "/v1/conversations/waiting/resolve") is not None
    assert reach("POST", "/v1/conversations/unknown/accept") is None  # the handler answers 404
    assert reach("GET", "/v1/customers/cu2/timeline") is None
    assert reach("GET", "/v1/customers/cu3/timeline") is not None
    assert reach("GET", "/v1/agent/work") is None
    assert reach("POST", "/v1/agents/ava/status") is None
    assert reach("POST", "/v1/agents/bruno/status") is not None
    assert reach("PUT", "/v1/agents/ava") is not None
    assert reach("GET", "/v1/conversations") is None  # the handler lists only hers (services.api.access)
    assert reach("GET", "/v1/queues") is not None
    assert reach("POST", "/v1/deliveries/x/retry") is not None


def test_delivery_errors_keep_no_addresses() -> None:
    from services.delivery.senders import _short

    assert _short("550 <ava@agents.example>: no such user, call +1 555 123 4567") == (
        "550 <[email]>: no such user, call [number]"
    )
    assert _short("refused at 2026-12-06T16:27:35Z") == "refused at 2026-12-06T16:27:35Z"  # a time is no number
    assert _short("HTTP 503:\n  Service Unavailable") == "HTTP 503: Service Unavailable"
    assert _short("x" * 500).endswith("…")


def test_a_conversation_resolved_by_an_erasure_is_notified_without_quoting_the_customer() -> None:
    at = datetime(2026, 12, 6, tzinfo=UTC)
    for erased in (False, True):
        facts = Facts(console_url="http://c", api_url="http://a")
        log = [
            ConversationOpened(
                at=at, customer_id="cu1", conversation_id="cv1", channel="email", contact="+15551234567"
            ),
            MessageReceived(
                at=at,
                customer_id="cu1",
                conversation_id="cv1",
                channel="email",
                message_id="m1",
                provider_message_id="p1",
                text="my passport number is X123",
                metadata={"subject": "Passport"},
            ),
            ConversationResolved(at=at, customer_id="cu1", conversation_id="cv1", agent_id="ava", erased=erased),
        ]
        notices = [
            n for seq, event in enumerate(log, 1) for n in facts.apply(StoredEvent(seq, "rd.evt.c.cu1.cv1", event))
        ]
        [resolved] = [n for n in notices if n.kind == "resolved"]
        quoted = (resolved.body["preview"], resolved.body["customer"]["contact"], facts.subjects.get("cv1"))
        if erased:
            assert quoted == ("", None, None)
        else:  # an ordinary resolution says what it was about
            assert quoted[:2] == ("my passport number is X123", "+155•••4567")


FIT = DecisionReason(rule="best_fit")


def test_no_notice_of_an_offer_on_a_conversation_never_opened() -> None:
    # A poison audit: a hand-published AgentOffered for a conversation that never existed sent
    # the agent an offer notice the router and API knew nothing of.
    at = datetime(2026, 12, 6, tzinfo=UTC)
    facts = Facts(console_url="http://c", api_url="http://a")
    phantom = AgentOffered(
        at=at, customer_id="cu1", conversation_id="cv_phantom", agent_id="bruno", expires_at=at, reason=FIT
    )
    assert facts.apply(StoredEvent(1, "rd.evt.c.cu1.cv_phantom", phantom)) == []
    opened = ConversationOpened(at=at, customer_id="cu1", conversation_id="cv1", channel="sms", contact="+15551234567")
    facts.apply(StoredEvent(2, "rd.evt.c.cu1.cv1", opened))
    real = AgentOffered(at=at, customer_id="cu1", conversation_id="cv1", agent_id="bruno", expires_at=at, reason=FIT)
    assert [n.kind for n in facts.apply(StoredEvent(3, "rd.evt.c.cu1.cv1", real))] == ["offer"]


NOW = datetime(2026, 12, 6, tzinfo=UTC)


def test_a_reply_carries_the_agents_name_for_the_chat_to_show() -> None:
    """Found by an audit: nothing set ``metadata["agent_name"]``, so the web chat never showed
    who answered; an operator's reply names nobody."""
    state = RouterState()
    evolve(state, 1, "rd.evt.a.ava", AgentProfileUpdated(at=NOW, agent_id="ava", profile=AgentProfile(name="Ava S.")))
    route = ReplyRoute(contact="visitor:abc", thread_ref=None, metadata={"visitor": "abc"}, channel="chat")

    def reply(agent_id: str | None) -> ReplyRequested:
        return ReplyRequested(
            at=NOW, customer_id="cu", conversation_id="cv", channel="chat", reply_id="r1", agent_id=agent_id, text="hi"
        )

    by_ava = deliver_command(reply("ava"), route, agent_name(state, reply("ava")))
    assert by_ava.metadata == {"visitor": "abc", "agent_name": "Ava S."}
    by_operator = deliver_command(reply(None), route, agent_name(state, reply(None)))
    assert by_operator.metadata == {"visitor": "abc"}
    assert route.metadata == {"visitor": "abc"}  # the route itself untouched
