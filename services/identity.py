"""Who a customer is: channel addresses normalised to identities, resolved to customer ids
through the ``rd_identity`` KV bucket with create-only writes (two racing first messages
cannot make two customers)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

# Which identity space each channel's addresses live in. SMS and WhatsApp share "phone",
# so the same number on both is one customer.
IDENTITY_KIND = {"sms": "phone", "whatsapp": "phone", "email": "email", "chat": "chat", "social": "social"}

_KV_SAFE = re.compile(r"[^-_.a-zA-Z0-9]")


class InvalidAddress(ValueError):
    pass


def normalise_phone(raw: str, default_region: str = "US") -> str:
    text = raw.removeprefix("whatsapp:").strip()
    if text.isdigit() and len(text) > 10 and not text.startswith("0"):
        # A WhatsApp wa_id: only digits, with the country code (never 0...), no plus. A number
        # written with spaces or a trunk 0 ("020 7946 0958") is a national one instead.
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as err:
        raise InvalidAddress(f"not a phone number: {err}") from err
    if not phonenumbers.is_possible_number(number):
        raise InvalidAddress("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class IdentityRules:
    """How addresses are normalised beyond the universal rules (E.164 phones, case-folded
    email domains). Provider-specific email rules apply only to the domains listed:
    ``email_ignore_dots`` (``a.b@gmail.com`` is ``ab@gmail.com``), ``email_strip_plus``
    (``ab+news@gmail.com`` is ``ab@gmail.com``), ``email_domain_aliases``
    (``googlemail.com`` is ``gmail.com``). On those domains the local part is case-folded too."""

    default_region: str = "US"
    email_ignore_dots: frozenset[str] = frozenset()
    email_strip_plus: frozenset[str] = frozenset()
    email_domain_aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> IdentityRules:
        """From ``[intake]`` (``services.config.IntakeSettings``): ``default_region``,
        ``email_ignore_dots``, ``email_strip_plus``, ``email_domain_aliases``."""
        return cls(
            default_region=getattr(settings, "default_region", "US"),
            email_ignore_dots=frozenset(d.casefold() for d in getattr(settings, "email_ignore_dots", ())),
            email_strip_plus=frozenset(d.casefold() for d in getattr(settings, "email_strip_plus", ())),
            email_domain_aliases={
                k.casefold(): v.casefold() for k, v in dict(getattr(settings, "email_domain_aliases", {})).items()
            },
        )


PLAIN = IdentityRules()


def normalise_email(raw: str, rules: IdentityRules = PLAIN) -> str:
    local, at, domain = raw.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in local + domain):
        raise InvalidAddress("not an email address")
    domain = domain.casefold()
    domain = rules.email_domain_aliases.get(domain, domain)
    special = False
    if domain in rules.email_strip_plus:
        local, special = local.split("+", 1)[0], True
    if domain in rules.email_ignore_dots:
        local, special = local.replace(".", ""), True
    if special:
        local = local.casefold()
    if not local:
        raise InvalidAddress("not an email address")
    return f"{local}@{domain}"


def identity_for(
    channel: str,
    address: str,
    *,
    platform: str | None = None,
    default_region: str | None = None,
    rules: IdentityRules = PLAIN,
) -> str:
    """``<kind>:<normalised address>``, e.g. ``phone:+15551234567``."""
    kind = IDENTITY_KIND.get(platform or channel, channel)
    if kind == "phone":
        return f"phone:{normalise_phone(address, default_region or rules.default_region)}"
    if kind == "email":
        return f"email:{normalise_email(address, rules)}"
    if not address.strip():
        raise InvalidAddress("empty address")
    return f"{kind}:{address.strip()}"


def parse_identity(text: str, rules: IdentityRules = PLAIN) -> str:
    """An operator's ``<channel or kind>:<address>`` (``sms:+1 555 123 4567``,
    ``whatsapp:+15551234567``, ``email:Ann@Example.com``, ``chat:<visitor id>``) as an identity."""
    channel, colon, address = text.strip().partition(":")
    channel = channel.strip().lower()
    if not colon or not channel or not re.fullmatch(r"[a-z][a-z0-9_-]*", channel):
        raise InvalidAddress("an identity is <channel>:<address>, e.g. sms:+15551234567 or email:ann@example.com")
    return identity_for(channel, address, rules=rules)


def mask(identity: str) -> str:
    """An identity fit for a report or a log line: the kind, and only a hint of the address."""
    kind, _, address = identity.partition(":")
    if kind == "email":
        local, at, domain = address.rpartition("@")
        return f"email:{local[:1]}…@{domain}" if at else "email:…"
    if len(address) <= 4:
        return f"{kind}:…"
    return f"{kind}:…{address[-4:]}"


def kv_key(identity: str) -> str:
    """A KV-safe key: '+' '@' ':' and friends escaped as =XX (reversible, readable)."""
    kind, _, address = identity.partition(":")
    return kind + "." + _KV_SAFE.sub(lambda m: "".join(f"={b:02X}" for b in m.group().encode()), address)


def new_customer_id() -> str:
    return "cu_" + uuid.uuid4().hex[:20]


MERGED_PREFIX = "_merged."
"""``_merged.<customer>`` → the customer it was merged into: written create-only before the
``CustomersMerged`` event, so two operators cannot merge one customer into two others."""


class IdentityDirectory:
    def __init__(self, kv: KeyValue, rules: IdentityRules = PLAIN) -> None:
        self.kv = kv
        self.rules = rules

    def identity(self, channel: str, address: str, *, platform: str | None = None) -> str:
        return identity_for(channel, address, platform=platform, rules=self.rules)

    def parse(self, text: str) -> str:
        return parse_identity(text, self.rules)

    async def lookup(self, identity: str) -> str | None:
        try:
            entry = await self.kv.get(kv_key(identity))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def resolve(self, identity: str) -> tuple[str, bool]:
        """The customer id for ``identity`` and whether this call created it."""
        existing = await self.lookup(identity)
        if existing:
            return existing, False
        candidate = new_customer_id()
        try:
            await self.kv.create(kv_key(identity), candidate.encode())
        except KeyWrongLastSequenceError:
            winner = await self.lookup(identity)
            if winner is None:  # created and deleted in between: vanishingly rare, try again
                return await self.resolve(identity)
            return winner, False
        return candidate, True

    async def claim(self, identity: str, customer_id: str) -> str:
        """Give ``identity`` to ``customer_id`` unless it already belongs to someone
        (create-only); returns whom it belongs to now."""
        try:
            await self.kv.create(kv_key(identity), customer_id.encode())
        except KeyWrongLastSequenceError:
            owner = await self.lookup(identity)
            if owner is None:
                return await self.claim(identity, customer_id)
            return owner
        return customer_id

    async def link(self, identity: str, customer_id: str) -> None:
        """Point ``identity`` at ``customer_id`` whoever had it (a merge moving addresses)."""
        await self.kv.put(kv_key(identity), customer_id.encode())

    async def merged_into(self, customer_id: str) -> str | None:
        try:
            entry = await self.kv.get(MERGED_PREFIX + customer_id)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def mark_merged(self, customer_id: str, survivor_id: str) -> str:
        """Record (create-only) that ``customer_id`` goes into ``survivor_id``; returns the
        survivor on record (another one if someone merged it first)."""
        try:
            await self.kv.create(MERGED_PREFIX + customer_id, survivor_id.encode())
        except KeyWrongLastSequenceError:
            found = await self.merged_into(customer_id)
            return found if found is not None else await self.mark_merged(customer_id, survivor_id)
        return survivor_id

    async def unmark_merged(self, customer_id: str) -> None:
        """Undo ``mark_merged`` when the merge event could not be written."""
        await self.kv.delete(MERGED_PREFIX + customer_id)
