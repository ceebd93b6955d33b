"""Block Kit for the Slack app's messages: one message per conversation and agent, redrawn as
the conversation moves (offered → accepted → resolved, or declined / expired / handed back).

Buttons carry the conversation id as ``value``; their ``action_id`` says what they do
(``services.api.slack_routes`` handles them). The customer's address is masked and only the
first lines of their message are shown, as in every notification.
"""

from __future__ import annotations

from typing import Any

from services.delivery.render import facts

ACCEPT = "relaydesk_accept"
DECLINE = "relaydesk_decline"
RESOLVE = "relaydesk_resolve"
OPEN = "relaydesk_open"
ACTIONS = frozenset({ACCEPT, DECLINE, RESOLVE})

# notice kind -> the message's state line ("{agent}" is the agent's name)
STATES = {
    "offer": "New offer for {agent}",
    "assigned": "Assigned to {agent}",
    "accepted": "Accepted by {agent}",
    "declined": "Declined by {agent}",
    "offer_expired": "Expired: the offer to {agent} lapsed",
    "released": "Handed back by {agent}",
    "resolved": "Resolved",
    "transferred": "Moved on from {agent} (transferred or escalated)",
}
FINAL = frozenset({"declined", "offer_expired", "released", "resolved", "transferred"})


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn (api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _quote(preview: str) -> dict[str, Any]:
    quoted = "\n".join("> " + escape(line) for line in preview.splitlines())
    return {"type": "section", "text": {"type": "mrkdwn", "text": quoted}}


def conversation_message(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The conversation's message as of ``body``'s notice: (fallback text, blocks)."""
    kind = str(body.get("notice", ""))
    conv = body.get("conversation", {})
    cid = str(conv.get("id", ""))
    channel = str(conv.get("channel") or "")
    agent = str(body.get("agent_name") or body.get("agent_id") or "")
    state = STATES.get(kind, kind).format(agent=agent)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{state} · {channel}", "emoji": True}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{escape(value)}"} for name, value in facts(body)],
        },
    ]
    if body.get("preview") and kind not in FINAL:
        blocks.append(_quote(str(body["preview"])))
    buttons: list[dict[str, Any]] = []
    if kind == "offer":
        buttons += [_button("Accept", ACCEPT, cid, "primary"), _button("Decline", DECLINE, cid)]
    elif kind in ("assigned", "accepted"):
        buttons.append(_button("Resolve", RESOLVE, cid, "danger"))
    console = body.get("links", {}).get("console")
    if console and kind not in FINAL:
        link = {"type": "plain_text", "text": "Open console"}
        buttons.append({"type": "button", "text": link, "url": console, "action_id": OPEN})
    if buttons:
        blocks.append({"type": "actions", "block_id": f"relaydesk_{cid}", "elements": buttons})
    notes = []
    if kind == "offer" and body.get("offer_expires_at"):
        notes.append(f"Offer expires {body['offer_expires_at']}")
    if kind in ("assigned", "accepted"):
        notes.append(f"Reply in this thread to answer the customer on {channel or 'their channel'}.")
    if notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(notes)}]})
    return f"{state}: {channel} conversation {cid}", blocks


def thread_message(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A new customer message, posted in the conversation's thread."""
    channel = str(body.get("conversation", {}).get("channel") or "")
    text = f"New customer message on {channel}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{escape(text)}*"}}]
    if body.get("preview"):
        blocks.append(_quote(str(body["preview"])))
    return text, blocks
