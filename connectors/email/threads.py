"""Email threading, pure: Message-ID lists, plus-address tokens, subject tags, reply headers.

Ids in ``thread_ref`` and provider ids are bare (``abc@example.com``); header-form strings
(``<abc@example.com>``) are kept in metadata ``message_id`` / ``in_reply_to`` / ``references``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from connectors.sdk.signatures import first_match

_MSGID = re.compile(r"<([^<>\s]+)>")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}(?:\.[0-9a-f]{10})?$")
_TAG = re.compile(r"\[#([A-Za-z0-9_-]{1,64}(?:\.[0-9a-f]{10})?)\]")
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|vs|antw|ref|odp|r)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
MAX_REFERENCES = 20


def msgids(header: str | None) -> list[str]:
    """The bare ids in a Message-ID / In-Reply-To / References value, in order, no duplicates."""
    if not header:
        return []
    out = list(dict.fromkeys(_MSGID.findall(str(header))))  # linear: 100,000 ids took minutes
    if not out:
        # Some clients send a bare id without brackets.
        bare = str(header).strip()
        if bare and " " not in bare and "@" in bare:
            out.append(bare.strip("<>"))
    return out


def bracket(ids: list[str]) -> str:
    return " ".join(f"<{i}>" for i in ids)


# -- conversation tokens (plus address, subject tag) ----------------------------------------


def _sig(secret: str, conversation_id: str) -> str:
    return hmac.new(secret.encode(), conversation_id.encode(), hashlib.sha256).hexdigest()[:10]


def make_token(conversation_id: str, secret: str = "") -> str:
    return f"{conversation_id}.{_sig(secret, conversation_id)}" if secret else conversation_id


def read_token(token: str, secret: str = "", extra: Sequence[str] = ()) -> str | None:
    """The conversation id a token names, or None when it is not a valid (signed) token.
    ``extra``: other secrets a token may be signed with (the old one after a rotation)."""
    if not _TOKEN.match(token):
        return None
    conversation_id, _, sig = token.partition(".")
    if not secret:
        return conversation_id
    matched = first_match([secret, *extra], lambda key: hmac.compare_digest(sig, _sig(key, conversation_id)))
    return conversation_id if sig and matched is not None else None


@dataclass(frozen=True)
class Address:
    base: str  # local@domain with the plus part removed, domain lower-cased
    token: str  # the plus part ("" if none)
    domain: str


def split_address(address: str) -> Address:
    local, _, domain = address.strip().strip("<>").rpartition("@")
    local, _, token = local.partition("+")
    domain = domain.lower()
    return Address(base=f"{local}@{domain}" if domain else local, token=token, domain=domain)


def plus_address(address: str, token: str) -> str:
    a = split_address(address)
    local = a.base.rpartition("@")[0]
    return f"{local}+{token}@{a.domain}"


def subject_token(subject: str) -> str | None:
    found = _TAG.search(subject or "")
    return found.group(1) if found else None


def reply_subject(subject: str | None, default: str, tag: str = "", *, replying: bool = True) -> str:
    """``Re: <subject>`` with exactly one ``Re:`` (Re/AW/SV/… prefixes collapsed); without
    ``replying`` (a first message, answering no mail of the customer's) no ``Re:`` at all."""
    base = _REPLY_PREFIX.sub("", (subject or "").strip()) or default
    if tag and f"[#{tag}]" not in base:
        base = f"{base} [#{tag}]"
    return f"Re: {base}" if replying else base


def reply_references(parent_id: str | None, parent_references: str | None) -> tuple[str | None, str | None]:
    """(In-Reply-To, References) of a reply to ``parent_id`` whose own References were
    ``parent_references``: References = parent's References + parent (the first and the
    last MAX_REFERENCES - 1 kept, as RFC 5322 suggests for long chains)."""
    if not parent_id:
        return None, bracket(msgids(parent_references)[-MAX_REFERENCES:]) or None
    parent = msgids(parent_id)[0] if msgids(parent_id) else parent_id.strip("<> ")
    chain = [i for i in msgids(parent_references) if i != parent] + [parent]
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return f"<{parent}>", bracket(chain)
