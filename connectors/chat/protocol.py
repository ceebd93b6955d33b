"""The socket protocol's vocabulary (``connectors/chat/README.md``): close codes, error frames,
and reading a client's frames and ``after_seq``."""

from __future__ import annotations

import json
from typing import Any

# WebSocket close codes (4000-4999 are the application's).
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_LATER = 1013  # the history stream did not answer: reconnect (with after_seq) later
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429

# Past any JetStream sequence (a uint64): a client's larger after_seq (JSON takes 4,000 digits)
# was sent to NATS as is, refused as a bad request and answered "history unavailable" (an audit).
MAX_SEQ = 2**63 - 1


def error_frame(
    code: str,
    reason: str,
    frame: dict[str, Any] | None = None,
    *,
    retryable: bool = False,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """``{"type":"error",...}``, naming the ``client_msg_id`` of ``frame`` if it has one."""
    out: dict[str, Any] = {"type": "error", "code": code, "reason": reason, "retryable": retryable}
    if frame is not None and isinstance(frame.get("client_msg_id"), str):
        out["client_msg_id"] = frame["client_msg_id"]
    if retry_after is not None:
        out["retry_after"] = retry_after
    return out


def json_object(data: str) -> dict[str, Any] | None:
    """A client's text frame as a JSON object; ``None`` if it is not one."""
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    return frame if isinstance(frame, dict) else None


def after_seq(after: object, epoch: object, current_epoch: str) -> int:
    """The client's ``after_seq``; 0 if unreadable or from another history stream (epoch)."""
    if not isinstance(after, (int, str)):
        return 0
    try:
        seq = int(after)
    except ValueError:
        return 0
    if isinstance(epoch, str) and epoch and epoch != current_epoch:
        return 0
    return min(max(seq, 0), MAX_SEQ)
