"""What the Graph API's answers to a send mean: their JSON, the id Meta gave, how long it asks
us to wait, and an error as a ``DeliveryResult`` (retry or not, and not sooner than Meta allows)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.sdk import DeliveryResult
from connectors.sdk.retry_after import retry_after_seconds

# WhatsApp's pair rate limit: one business number may write to one user about once every 6 s.
PAIR_RATE_LIMIT = 131056
PAIR_RATE_LIMIT_WAIT_S = 6.0
# Graph error codes worth retrying (throttling, temporary outages).
RETRYABLE_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, 80006, 80007, 130429, 131000, 131048, 131056})
# Graph errors meaning "outside the messaging window".
WINDOW_ERRORS = frozenset({(10, 2018278), (10, 2534022), (131047, None), (551, 1545041)})


def answer_text(value: Any) -> str:
    """A field of Meta's JSON as text: ids come as strings, sometimes as numbers."""
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else ""


def answer_body(raw: bytes) -> dict[str, Any]:
    """An answer's JSON object; a body that is not JSON reads as an error carrying its start."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = {"error": {"message": raw[:200].decode("utf-8", "replace") or "no detail"}}
    return data if isinstance(data, dict) else {}


def whatsapp_message_id(data: dict[str, Any]) -> str:
    """The id the Cloud API gave a sent message (``messages[0].id``), or ""."""
    messages = data.get("messages")
    first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
    return answer_text(first.get("id"))


def meta_wait(headers: Mapping[str, str]) -> float | None:
    """How long a throttled Graph API call asks us to wait, in seconds: a ``Retry-After``, or
    the longest ``estimated_time_to_regain_access`` (minutes) of ``X-Business-Use-Case-Usage``
    (Meta's rate-limit header; it seldom sends ``Retry-After``). None when neither says."""
    waits = [w for w in (retry_after_seconds(headers.get("Retry-After")),) if w is not None]
    usage = headers.get("X-Business-Use-Case-Usage")
    if usage:
        try:
            decoded = json.loads(usage)
        except (ValueError, RecursionError):
            decoded = None
        for entries in decoded.values() if isinstance(decoded, dict) else ():
            for entry in entries if isinstance(entries, list) else ():
                minutes = entry.get("estimated_time_to_regain_access") if isinstance(entry, dict) else None
                if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
                    waits.append(float(minutes) * 60.0)
    return max(waits) if waits else None


def failure(platform: str, status: int, data: dict[str, Any], wait: float | None = None) -> DeliveryResult:
    """A Graph API error as a DeliveryResult: 5xx, 429 and throttling codes retry; other 4xx
    don't. A throttled call is not retried sooner than Meta asked (``wait``), nor a message to
    a recipient Meta says is written to too fast (131056) sooner than its pair limit allows."""
    raw_error = data.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    message = answer_text(error.get("message")) or "no detail"
    error_data = error.get("error_data")
    details = answer_text(error_data.get("details")) if isinstance(error_data, dict) else ""
    if details and details not in message:
        message = f"{message} ({details})"
    where = f"meta {status}" + (f" error {code}" if code is not None else "") + (f"/{subcode}" if subcode else "")
    if (code, subcode) in WINDOW_ERRORS or (code, None) in WINDOW_ERRORS:
        template = "; WhatsApp needs an approved template message" if platform == "whatsapp" else ""
        return DeliveryResult.failed(f"outside the 24-hour messaging window{template} ({where}: {message})")
    retryable = status >= 500 or status == 429 or (code in RETRYABLE_CODES)
    if code == PAIR_RATE_LIMIT:
        wait = max(wait or 0.0, PAIR_RATE_LIMIT_WAIT_S)
    return DeliveryResult.failed(f"{where}: {message}", retryable=retryable, retry_after=wait if retryable else None)
