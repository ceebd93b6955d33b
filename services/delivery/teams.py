"""Microsoft Teams: a notice as an Adaptive Card, posted to a Teams Workflows webhook.

Teams' Workflows app ("Post to a channel when a webhook request is received") takes a POST of
a ``message`` whose ``attachments`` hold one card of content type
``application/vnd.microsoft.card.adaptive`` (schema 1.4, what Teams renders) and answers
202 Accepted. Retries follow the other senders: 408/425/429 and 5xx are retried with backoff,
another 4xx dead-letters the delivery. When Workflows throttles (429, as Power Automate does
under its request limits) its ``Retry-After`` (seconds or an HTTP date) is waited out, up to
``max_wait``, before the attempt returns, as the Slack sender does: the next try never comes
sooner than Teams asked.

The card goes to a team channel that more people read than the agent it is for, so it carries
routing facts only: what happened, for whom, the channel, tier and flags, language, skills,
wait and the offer's deadline, and buttons to the console. Never the customer's words, name
or address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import structlog

from connectors.sdk.retry_after import retry_after_seconds as retry_after_seconds  # senders read it here
from services.delivery.render import TITLES, skills_text, wait_text

log = structlog.get_logger(__name__)

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
RETRYABLE_HTTP = frozenset({408, 425, 429})
DEFAULT_RETRY_AFTER = 1.0  # a 429 without a usable Retry-After still gets a pause


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
        ("Skills", skills_text(body)),
        ("Wait", wait_text(body)),
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


@dataclass(frozen=True)
class Posted:
    """One post to a Workflows webhook: ``error`` is for the delivery record (the caller
    shortens and blanks it); ``retry_after`` is what a 429 asked for (s), if it said."""

    ok: bool
    retryable: bool
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    *,
    max_wait: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Posted:
    """Post the notice's card to ``url``; on 429 wait ``Retry-After`` (at most ``max_wait``)."""
    raw = msgspec.json.encode(message(body))
    try:
        async with http.post(url, data=raw, headers={"Content-Type": "application/json"}) as r:
            text = await r.text(errors="replace")
            status = r.status
            retry_after = retry_after_seconds(r.headers.get("Retry-After"))
    except TimeoutError:
        return Posted(False, True, None, "timed out")
    except aiohttp.ClientError as err:
        return Posted(False, True, None, f"{type(err).__name__}: {err}")
    if 200 <= status < 300:
        return Posted(True, False, status)
    if status == 429:
        wait = min(retry_after if retry_after is not None else DEFAULT_RETRY_AFTER, max_wait)
        log.info("teams.rate_limited", retry_after=retry_after, waiting_s=wait)
        # Teams asked for a pause: honour it before anyone tries again.
        await sleep(wait)
    retryable = status >= 500 or status in RETRYABLE_HTTP
    return Posted(False, retryable, status, f"HTTP {status}: {text}", retry_after)
