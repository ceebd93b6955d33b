"""Microsoft Teams: a notice as an Adaptive Card, posted to a Teams Workflows webhook.

Teams' Workflows app ("Post to a channel when a webhook request is received") takes a POST of
a ``message`` whose ``attachments`` hold one card of content type
``application/vnd.microsoft.card.adaptive`` (schema 1.4, what Teams renders) and answers
202 Accepted. Retries follow the other senders: 408/425/429 and 5xx are retried with backoff,
another 4xx dead-letters the delivery.

The card goes to a team channel that more people read than the agent it is for, so it carries
routing facts only: what happened, for whom, the channel, tier and flags, language, skills,
wait and the offer's deadline, and buttons to the console. Never the customer's words, name
or address.
"""

from __future__ import annotations

from typing import Any

from services.delivery.render import TITLES

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"


def _skills(body: dict[str, Any]) -> str:
    skills = body.get("requirements", {}).get("skills", {}) or {}
    return ", ".join(f"{name} ≥{level}" for name, level in sorted(skills.items())) or "—"


def _wait(body: dict[str, Any]) -> str:
    seconds = body.get("wait_seconds")
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def facts(body: dict[str, Any]) -> list[dict[str, str]]:
    """The card's FactSet: routing facts, nothing the customer wrote or how to reach them."""
    conv, customer = body.get("conversation", {}) or {}, body.get("customer", {}) or {}
    flags = customer.get("flags") or []
    tier = str(customer.get("tier") or "standard") + (f" · {', '.join(flags)}" if flags else "")
    rows = [
        ("Agent", str(body.get("agent_name") or body.get("agent_id") or "—")),
        ("Conversation", str(conv.get("id") or "—")),
        ("Channel", str(conv.get("channel") or "—")),
        ("Tier", tier),
        ("Language", str((body.get("requirements") or {}).get("language") or "—")),
        ("Skills", _skills(body)),
        ("Wait", _wait(body)),
    ]
    if body.get("notice") == "offer" and body.get("offer_expires_at"):
        rows.append(("Offer expires", str(body["offer_expires_at"])))
    return [{"title": title, "value": value} for title, value in rows]


def card(body: dict[str, Any]) -> dict[str, Any]:
    """The Adaptive Card (schema 1.4) for one notice."""
    kind = str(body.get("notice", ""))
    title = TITLES.get(kind, kind.replace("_", " ").capitalize())
    channel = (body.get("conversation") or {}).get("channel") or ""
    links = body.get("links", {}) or {}
    actions: list[dict[str, Any]] = []
    if kind == "offer" and links.get("accept"):
        actions.append({"type": "Action.OpenUrl", "title": "Accept in console", "url": links["accept"]})
    if links.get("console"):
        actions.append({"type": "Action.OpenUrl", "title": "Open in console", "url": links["console"]})
    content: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": f"{title} · {channel}" if channel else title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {"type": "FactSet", "facts": facts(body)},
        ],
    }
    if actions:
        content["actions"] = actions
    return content


def message(body: dict[str, Any]) -> dict[str, Any]:
    """What the Workflows webhook takes: a message with the card as its one attachment."""
    return {
        "type": "message",
        "summary": f"{TITLES.get(str(body.get('notice', '')), 'Relaydesk')}: conversation "
        f"{(body.get('conversation') or {}).get('id', '')}",
        "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": card(body)}],
    }
