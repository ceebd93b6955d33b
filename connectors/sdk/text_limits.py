"""How long a reply's text may be on the channel (and platform) it goes out on.

A reply over its provider's limit can never be delivered: Twilio refuses a ``Body`` over 1,600
characters (error 21617) and Meta a Messenger text over 2,000, so such a reply used to be
accepted (202), written to the log and end as ``DeliveryFailed`` a moment later, the agent's
words lost in a failure reason. The API refuses it first (400 naming the limit and the length),
and nothing is written; a connector checks the same limits before it calls its provider (a
reply written in a helpdesk reaches it unchecked). Nothing is ever cut or split: a cut could
fall inside a surrogate pair, an emoji sequence or a letter and its accent, and a reply split in
two arrives out of order.

Lengths are counted as the providers count them: in UTF-16 code units, so an emoji (outside the
Basic Multilingual Plane) counts 2, and a flag or a family emoji counts every part. A template's
text is its preview, checked by the provider per parameter, not here. Chat and email take any
length the API's body limit lets through; a connector made with the SDK checks its own.
"""

from __future__ import annotations

from collections.abc import Mapping

# Twilio's Messages API (SMS, MMS and WhatsApp through Twilio): Body up to 1,600 characters.
TWILIO_BODY = 1600
# Meta: Messenger 2,000, Instagram 1,000, a WhatsApp text 4,096 and a media caption 1,024,
# a Page comment 8,000.
SOCIAL = {"messenger": 2000, "instagram": 1000, "whatsapp": 4096, "facebook": 8000}
WHATSAPP_CAPTION = 1024


def length(text: str) -> int:
    """``text``'s length in UTF-16 code units, as Twilio and Meta count characters."""
    return len(text.encode("utf-16-le")) // 2


def limit(channel: str, metadata: Mapping[str, str], *, with_files: bool) -> tuple[int, str] | None:
    """The most characters a reply's text may have on ``channel`` (``metadata``: the reply
    route's, ``platform``), and what to call that limit; None: no limit here."""
    platform = metadata.get("platform", "")
    if channel == "sms":
        on = "WhatsApp through Twilio" if platform == "whatsapp" else "SMS (Twilio)"
        return TWILIO_BODY, on
    if channel == "social":
        platform = platform or "messenger"
        if platform == "whatsapp" and with_files:
            # The text goes as the first file's caption (an audio file takes none: then it is a
            # text message of its own, and the caption limit is the smaller, so it is used).
            return WHATSAPP_CAPTION, "a WhatsApp file's caption"
        if platform in SOCIAL:
            return SOCIAL[platform], platform.capitalize() if platform != "whatsapp" else "WhatsApp"
    return None


def refusal(channel: str, metadata: Mapping[str, str], text: str, *, with_files: bool = False) -> str | None:
    """Why ``text`` cannot go out on ``channel``, or None when it fits."""
    found = limit(channel, metadata, with_files=with_files)
    if found is None:
        return None
    most, on = found
    n = length(text)
    if n <= most:
        return None
    return (
        f"the reply is {n} characters; {on} takes at most {most} (emoji count 2; shorten it, or send it as two replies)"
    )
