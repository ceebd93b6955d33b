"""What each kind of endpoint receives, rendered from a notice body."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

TITLES = {
    "offer": "New offer",
    "assigned": "Assigned to you",
    "message": "New customer message",
    "offer_expired": "Offer expired",
    "released": "Conversation handed back",
}


def skills_text(body: dict[str, Any]) -> str:
    skills = body.get("requirements", {}).get("skills", {}) or {}
    return ", ".join(f"{name} ≥{level}" for name, level in sorted(skills.items())) or "—"


def wait_text(body: dict[str, Any]) -> str:
    seconds = body.get("wait_seconds")
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def facts(body: dict[str, Any]) -> list[tuple[str, str]]:
    conv, customer = body.get("conversation", {}), body.get("customer", {})
    who = customer.get("id", "")
    if customer.get("contact"):
        who += f" ({customer['contact']})"
    return [
        ("Customer", who),
        ("Channel", str(conv.get("channel") or "—")),
        (
            "Tier",
            str(customer.get("tier") or "standard")
            + (f" · {', '.join(customer['flags'])}" if customer.get("flags") else ""),
        ),
        ("Language", str(body.get("requirements", {}).get("language") or "—")),
        ("Skills", skills_text(body)),
        ("Wait", wait_text(body)),
        # A paced notice stands for the messages held since the last (services.delivery.pacing).
        *([("Messages", f"{told} since the last notice (the newest shown)")] if (told := _told(body)) > 1 else []),
    ]


def _told(body: dict[str, Any]) -> int:
    told = body.get("messages", 1)
    return told if isinstance(told, int) else 1


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """Slack Block Kit for an incoming webhook."""
    kind = body.get("notice", "")
    title = TITLES.get(kind, kind)
    channel = body.get("conversation", {}).get("channel") or ""
    summary = f"{title}: {channel} conversation {body.get('conversation', {}).get('id', '')}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title} · {channel}", "emoji": True}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"} for name, value in facts(body)],
        },
    ]
    if body.get("preview"):
        quoted = "\n".join("> " + _escape(line) for line in str(body["preview"]).splitlines())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": quoted}})
    links = body.get("links", {})
    buttons: list[dict[str, Any]] = []
    if kind == "offer" and links.get("accept"):
        buttons.append(
            {
                "type": "button",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Accept in console"},
                "url": links["accept"],
                "action_id": "relaydesk_accept",
            }
        )
    if links.get("console"):
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open console"},
                "url": links["console"],
                "action_id": "relaydesk_open",
            }
        )
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    if body.get("offer_expires_at") and kind == "offer":
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Offer expires {body['offer_expires_at']}"}]}
        )
    return {"text": summary, "blocks": blocks}


def notice_message_id(delivery_id: str, sender: str) -> str:
    """``<rd.notice.<hash>@<sender's domain>>``: the same on every attempt of one delivery (a
    retry after an ambiguous failure is collapsed by mail clients), and in the form the email
    connector knows as ours (``rd.<id>@``), so a notice that comes back, or an answer to one,
    never becomes a customer's mail (connectors/email/returning.py ``own_mail``)."""
    domain = sender.rpartition("@")[2].strip().strip(">").lower() or "localhost"
    return f"<rd.notice.{hashlib.sha256(delivery_id.encode()).hexdigest()[:32]}@{domain}>"


def email(body: dict[str, Any], *, sender: str, to: str, delivery_id: str) -> EmailMessage:
    kind = body.get("notice", "")
    title = TITLES.get(kind, kind)
    conv = body.get("conversation", {})
    message = EmailMessage()
    message["Subject"] = f"[Relaydesk] {title}: {conv.get('channel') or ''} conversation {conv.get('id', '')}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False, usegmt=True)  # RFC 5322: required
    message["Message-ID"] = notice_message_id(delivery_id, sender)
    # RFC 3834: generated by a machine, so no responder answers it (out-of-office replies to
    # every notice); Exchange/Outlook read the second.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Relaydesk-Delivery"] = delivery_id
    lines = [f"{title}", ""]
    lines += [f"{name}: {value}" for name, value in facts(body)]
    if body.get("subject"):  # an email's subject: only in this notice to the agent's mailbox
        lines.append("Subject: " + " ".join(str(body["subject"]).split()))
    if body.get("preview"):
        lines += ["", "Message:", *("  " + line for line in str(body["preview"]).splitlines())]
    links = body.get("links", {})
    lines += [""]
    if kind == "offer" and links.get("accept"):
        lines.append(f"Accept: {links['accept']}")
    if links.get("console"):
        lines.append(f"Console: {links['console']}")
    message.set_content("\n".join(lines) + "\n")
    return message
