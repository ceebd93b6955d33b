"""Meta webhook payloads as Meta sends them (compact JSON, non-ASCII escaped), and signing."""

from __future__ import annotations

import json
from typing import Any

from connectors.social.signature import sign

APP_SECRET = "test_app_secret"
VERIFY_TOKEN = "verify-me-please"
ACCESS_TOKEN = "EAAG-test-access-token"
PAGE_ID = "PAGE_ID"
IG_ID = "17841400000000001"
PHONE_NUMBER_ID = "106540352242922"

# The vector from wire-formats.md, byte for byte.
VECTOR_BODY = (
    b'{"object":"page","entry":[{"id":"PAGE_ID","time":1458692752478,"messaging":[{"sender":{"id":"PSID_1"},'
    b'"recipient":{"id":"PAGE_ID"},"timestamp":1458692752478,"message":{"mid":"mid.1457764197618:41d102a3e1ae206a38",'
    b'"text":"hello, world!"}}]}]}'
)
VECTOR_SIGNATURE = "sha256=0ecd07360845b877fadeaba351e7ef3bb237e6dd2dc0937ad04f967cedf02d13"
VECTOR_MID = "mid.1457764197618:41d102a3e1ae206a38"


def dumps(payload: Any) -> bytes:
    """As Meta serialises: compact, non-ASCII as \\uXXXX."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}


def messaging(
    sender: str,
    mid: str,
    text: str,
    *,
    page: str = PAGE_ID,
    ts: int = 1_700_000_000_000,
    echo: bool = False,
    **message: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"mid": mid, "text": text, **message}
    if echo:
        msg["is_echo"] = True
        msg["app_id"] = 1517776481860111
        return {"sender": {"id": page}, "recipient": {"id": sender}, "timestamp": ts, "message": msg}
    return {"sender": {"id": sender}, "recipient": {"id": page}, "timestamp": ts, "message": msg}


def page_entry(*events: dict[str, Any], page: str = PAGE_ID, key: str = "messaging") -> dict[str, Any]:
    return {"id": page, "time": 1_700_000_000_500, key: list(events)}


def page_batch(*entries: dict[str, Any], obj: str = "page") -> dict[str, Any]:
    return {"object": obj, "entry": list(entries)}


def whatsapp(
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    *,
    name: str = "Ana Pérez",
    wa_id: str = "15551230000",
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
    }
    if messages is not None:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": wa_id}]
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WHATSAPP_BUSINESS_ACCOUNT_ID", "changes": [{"field": "messages", "value": value}]}],
    }


def wa_text(wamid: str, body: str, *, sender: str = "15551230000", ts: str = "1700000000") -> dict[str, Any]:
    return {"from": sender, "id": wamid, "timestamp": ts, "type": "text", "text": {"body": body}}


def wa_status(wamid: str, status: str = "delivered") -> dict[str, Any]:
    return {
        "id": wamid,
        "status": status,
        "timestamp": "1700000100",
        "recipient_id": "15551230000",
        "conversation": {"id": "CONVERSATION_ID", "origin": {"type": "service"}},
        "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
    }


def feed_comment(
    comment_id: str,
    *,
    author: str = "USER_1",
    message: str = "Where is my order?",
    post_id: str = "PAGE_ID_POST_1",
    item: str = "comment",
    verb: str = "add",
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "from": {"id": author, "name": "Sam Doe"},
        "post": {"status_type": "added_photos", "is_published": True, "id": post_id},
        "message": message,
        "post_id": post_id,
        "comment_id": comment_id,
        "created_time": 1_700_000_000,
        "item": item,
        "parent_id": post_id,
        "verb": verb,
    }
    if item == "post":
        del value["comment_id"]
    return page_batch({"id": PAGE_ID, "time": 1_700_000_000, "changes": [{"field": "feed", "value": value}]})


def ig_comment(comment_id: str, *, author: str = "IG_USER_1", text: str = "Is this in stock?") -> dict[str, Any]:
    value = {
        "from": {"id": author, "username": "sam.shops"},
        "media": {"id": "MEDIA_1", "media_product_type": "FEED"},
        "id": comment_id,
        "text": text,
    }
    return page_batch(
        {"id": IG_ID, "time": 1_700_000_000, "changes": [{"field": "comments", "value": value}]}, obj="instagram"
    )
