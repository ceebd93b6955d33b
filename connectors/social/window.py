"""Meta's customer-service window: free-form replies only within 24 h of the customer's last message.

Pure: the clock is passed in. Messenger/Instagram may go on for 7 days with the
``HUMAN_AGENT`` message tag (when the app has that permission and ``human_agent_tag`` is on);
WhatsApp needs an approved template after the window, which a free-text reply is not.
Public comment replies have no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HUMAN_AGENT_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class WindowDecision:
    ok: bool
    # Messenger/IG: "RESPONSE" inside the window, "MESSAGE_TAG" with tag HUMAN_AGENT after it.
    messaging_type: str = "RESPONSE"
    tag: str | None = None
    reason: str = ""


def parse_time(value: str) -> datetime:
    """An ISO 8601 time; naive means UTC. Raises ``ValueError``."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


def check(
    platform: str,
    last_customer_message_at: str | None,
    now: datetime,
    *,
    window_hours: float = 24.0,
    human_agent_tag: bool = False,
) -> WindowDecision:
    """Whether a free-form reply may go now. Without ``last_customer_message_at`` the reply is
    sent and Meta enforces the window itself (its refusal becomes a clear ``DeliveryFailed``)."""
    if not last_customer_message_at or window_hours <= 0:
        return WindowDecision(ok=True)
    try:
        last = parse_time(last_customer_message_at)
    except ValueError:
        return WindowDecision(ok=False, reason="metadata last_customer_message_at is not an ISO 8601 time")
    elapsed = now - last
    window = timedelta(hours=window_hours)
    if elapsed <= window:
        return WindowDecision(ok=True)
    label = f"{window_hours:g}-hour"
    since = f"the customer's last message was {_ago(elapsed)} ago"
    if platform == "whatsapp":
        return WindowDecision(
            ok=False,
            reason=f"outside the {label} messaging window ({since}); WhatsApp needs an approved template message",
        )
    if human_agent_tag and elapsed <= HUMAN_AGENT_WINDOW:
        return WindowDecision(ok=True, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
    extra = "" if human_agent_tag else "; enable human_agent_tag to answer within 7 days"
    return WindowDecision(
        ok=False,
        reason=f"outside the {label} messaging window ({since}); {platform} accepts no free-form reply now{extra}",
    )
