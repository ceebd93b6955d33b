"""What each channel takes as a reply's attachment: the largest file and the types.

The providers' documented limits (``CHANNEL_LIMITS``), or ``max_attachment_bytes`` /
``attachment_types`` in ``[connectors.<channel>]``; ``services.api.uploads`` checks every
upload a reply names against those of the channel the reply goes out on.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.model import Attachment
from services.api.common import ApiDeps


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    types: tuple[str, ...]  # exact types or prefixes ending in "/"; empty: any

    def refusal(self, channel: str, attachment: Attachment) -> str | None:
        size, kind = attachment.size or 0, (attachment.content_type or "").lower()
        if size > self.max_bytes:
            return f"{attachment.name or 'file'} is {size} bytes; {channel} takes at most {self.max_bytes}"
        if self.types and not any(kind == t or (t.endswith("/") and kind.startswith(t)) for t in self.types):
            return f"{channel} does not take {kind or 'files without a type'} (takes {', '.join(self.types)})"
        return None


# What each provider documents (the smallest of its surfaces where they differ).
CHANNEL_LIMITS: dict[str, Limits] = {
    # Twilio MMS: 5 MB per message; images, audio, video, PDF, vCard.
    "sms": Limits(5 * 1024 * 1024, ("image/", "audio/", "video/", "application/pdf", "text/vcard", "text/plain")),
    # WhatsApp: images 5 MB, audio/video 16 MB, documents 100 MB; Messenger 25 MB.
    "social": Limits(
        5 * 1024 * 1024, ("image/jpeg", "image/png", "audio/", "video/mp4", "application/pdf", "text/plain")
    ),
    "email": Limits(10 * 1024 * 1024, ()),
    "chat": Limits(10 * 1024 * 1024, ()),
}


def limits_for(deps: ApiDeps, channel: str) -> Limits:
    base = CHANNEL_LIMITS.get(channel, Limits(5 * 1024 * 1024, ()))
    table = deps.connector_table(channel)
    configured_bytes = int(table.get("max_attachment_bytes") or 0)
    configured_types = tuple(str(t).lower() for t in table.get("attachment_types") or ())
    return Limits(configured_bytes or base.max_bytes, configured_types or base.types)
