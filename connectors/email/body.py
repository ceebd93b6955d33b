"""An email's body as the message's text, and its files as attachments.

The text: plain preferred, HTML converted when there is no plain part (capped first, so one mail
cannot hold the event loop), the bodies of multiparts that could not be split kept as sent.
The files: every attachment, a mail that is one file, inline images and files of nested
multiparts, each with its bytes (``AttachmentBody``) and its object store url by content hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message

from events.model import Attachment

from .charsets import clean_text, decode_bytes
from .filenames import filename, safe_filename
from .html import cap_html, html_to_text
from .lenient import forgiven
from .settings import EmailSettings

_FILE_TYPES = {"image", "audio", "video", "application"}


@dataclass(frozen=True)
class AttachmentBody:
    meta: Attachment
    data: bytes


def attachment_url(bucket: str, sha256: str) -> str:
    return f"nats-object://{bucket}/{sha256}"


def _decoded(part: Message) -> str:
    """A text part's content, its transfer encoding undone and its charset read as a mail
    client reads it (``charsets.decode_bytes``): never raises."""
    try:
        payload = part.get_payload(decode=True)
    except Exception as err:  # a transfer encoding broken beyond what the parser forgives
        forgiven("transfer_encoding", err)
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return clean_text(raw) if isinstance(raw, str) else ""
    return decode_bytes(payload, part.get_content_charset())


def body_text(msg: EmailMessage, unsplit: Sequence[Message] = ()) -> tuple[str, bool, bool]:
    """(text, came from HTML only, the HTML was cut). Plain preferred; HTML converted when there
    is no plain part or the plain part is blank (a multipart/alternative whose text/plain is
    empty). The bodies of ``unsplit`` multiparts follow as they were sent: never dropped."""
    text, html_only, html_cut = "", False, False
    plain = msg.get_body(preferencelist=("plain",))
    if isinstance(plain, EmailMessage):
        text = _decoded(plain).replace("\r\n", "\n").strip()
    html = msg.get_body(preferencelist=("html",)) if not text else None
    if isinstance(html, EmailMessage):
        source = _decoded(html)
        capped = cap_html(source)  # one mail must not hold the event loop for seconds
        html_cut = len(capped) < len(source)
        text, html_only = html_to_text(capped, partial=html_cut), True
    raw = [body for body in (_decoded(part).replace("\r\n", "\n").strip() for part in unsplit) if body]
    if raw:
        text = "\n\n".join([text, *raw] if text else raw)
    return text, html_only, html_cut


def _leaves(msg: Message) -> list[EmailMessage]:
    """The non-multipart parts under ``msg``, without descending into attached messages."""
    out: list[EmailMessage] = []
    payload = msg.get_payload() if msg.is_multipart() and msg.get_content_maintype() == "multipart" else None
    for part in payload if isinstance(payload, list) else ():
        if not isinstance(part, Message):
            continue
        if part.get_content_maintype() == "multipart":
            out.extend(_leaves(part))
        elif isinstance(part, EmailMessage):
            out.append(part)
    return out


def attachment_bodies(msg: EmailMessage, settings: EmailSettings) -> list[AttachmentBody]:
    out: list[AttachmentBody] = []
    if msg.get_content_maintype() != "multipart":
        # A mail that is one file (a scanner's or fax gateway's PDF, a lone photo): that file
        # is its attachment, as in a multipart holding nothing but a file; the text is empty.
        one = msg.get_content_maintype() in _FILE_TYPES or msg.is_attachment()
        parts = [msg] if one or msg.get_content_type() == "message/rfc822" else []
    else:
        parts = [p for p in msg.iter_attachments() if isinstance(p, EmailMessage)]
    # Files the top level does not list: inline images of an HTML body (multipart/related
    # inside multipart/alternative), files inside a nested multipart. Text parts and
    # report parts are the body or bounce machinery, not files.
    listed = {id(p) for p in parts}
    for part in _leaves(msg):
        if id(part) not in listed and part.get_content_maintype() in _FILE_TYPES:
            parts.append(part)
            listed.add(id(part))
    for part in parts:
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else part.get_payload()
            data = inner.as_bytes() if isinstance(inner, Message) else str(inner).encode()
        else:
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        digest = hashlib.sha256(data).hexdigest()
        name = filename(part)
        meta = Attachment(
            url=attachment_url(settings.attachment_bucket, digest),
            content_type=ctype,
            name=safe_filename(name, ctype) if name is not None else None,
            size=len(data),
            sha256=digest,
        )
        out.append(AttachmentBody(meta, data))
    return out
