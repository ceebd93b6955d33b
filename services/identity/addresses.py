"""Channel addresses as identities: ``<kind>:<address>``, the same person's address written one
way whatever the channel or the provider wrote (``sms:+1 555…`` and WhatsApp's ``1555…`` are one
``phone:+1555…``; an email address in NFC with its domain in Unicode form). Pure: no I/O.
``services.identity`` resolves identities to customers."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import idna
import phonenumbers

from services.config_strict import did_you_mean

# Which identity space each channel's addresses live in. SMS and WhatsApp share "phone",
# so the same number on both is one customer.
IDENTITY_KIND = {
    "sms": "phone",
    "whatsapp": "phone",
    "voice": "phone",
    "email": "email",
    "chat": "chat",
    "social": "social",
}


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
    # The kinds an operator may name in ``<kind>:<address>`` (``parse_identity``); None: any.
    kinds: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, channels: Iterable[str] | None = None) -> IdentityRules:
        """From ``[intake]`` (``services.config.IntakeSettings``): ``default_region``,
        ``email_ignore_dots``, ``email_strip_plus``, ``email_domain_aliases``; with the
        ``channels`` known (``services.api.registry.known_channels``), an identity an operator
        names must be of one of them or of a kind they make (``phone``, ``email``, …)."""
        return cls(
            kinds=None if channels is None else frozenset((*channels, *IDENTITY_KIND, *IDENTITY_KIND.values())),
            default_region=getattr(settings, "default_region", "US"),
            email_ignore_dots=frozenset(d.casefold() for d in getattr(settings, "email_ignore_dots", ())),
            email_strip_plus=frozenset(d.casefold() for d in getattr(settings, "email_strip_plus", ())),
            email_domain_aliases={
                k.casefold(): v.casefold() for k, v in dict(getattr(settings, "email_domain_aliases", {})).items()
            },
        )


PLAIN = IdentityRules()


def email_domain(domain: str) -> str:
    """A mail domain in one form however it was written: lower case, and an internationalised
    one (``Bücher.de``, ``xn--bcher-kva.de``) in its Unicode form under IDNA 2008 (UTS #46
    mapping, non-transitional: ``straße.de`` stays itself, for ``strasse.de`` is another
    domain). One IDNA rejects (an ``_`` in a label) is lower-cased as it is, in NFC."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()
    try:
        return str(idna.decode(idna.encode(domain, uts46=True, transitional=False)))
    except (idna.IDNAError, UnicodeError):
        return unicodedata.normalize("NFC", domain).lower()


def normalise_email(raw: str, rules: IdentityRules = PLAIN) -> str:
    """``local@domain`` as one identity: the local part in NFC (``josé`` typed on a Mac, in
    NFD, is the same address; its case is kept, see README *Known limitations*), the domain as
    ``email_domain`` gives it, then the provider rules configured for that domain."""
    local, at, domain = raw.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in local + domain):
        raise InvalidAddress("not an email address")
    local = unicodedata.normalize("NFC", local)
    domain = email_domain(domain)
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


def earlier_forms(identity: str) -> tuple[str, ...]:
    """The other forms earlier versions gave an email identity that is now written one way
    (``normalise_email``): its local part in NFD, its domain as an A-label (``xn--…``).
    Found by an audit: ``josé@example.com`` in NFC and in NFD, and ``ann@Bücher.de`` and
    ``ann@xn--bcher-kva.de``, were two customers each. A key of such a form found by a lookup
    moves to the identity's own key (``IdentityDirectory._adopt``). An ASCII identity has none."""
    kind, _, address = identity.partition(":")
    if kind != "email" or address.isascii():
        return ()
    local, _, domain = address.rpartition("@")
    locals_ = {local, unicodedata.normalize("NFD", local)}
    domains = {domain}
    with contextlib.suppress(idna.IDNAError, UnicodeError):
        domains.add(idna.encode(domain, uts46=True, transitional=False).decode("ascii"))
    return tuple(sorted({f"email:{lp}@{d}" for lp in locals_ for d in domains} - {identity}))


def parse_identity(text: str, rules: IdentityRules = PLAIN) -> str:
    """An operator's ``<channel or kind>:<address>`` (``sms:+1 555 123 4567``,
    ``whatsapp:+15551234567``, ``email:Ann@Example.com``, ``chat:<visitor id>``) as an identity."""
    channel, colon, address = text.strip().partition(":")
    channel = channel.strip().lower()
    if not colon or not channel or not re.fullmatch(r"[a-z][a-z0-9_-]*", channel):
        raise InvalidAddress("an identity is <channel>:<address>, e.g. sms:+15551234567 or email:ann@example.com")
    if rules.kinds is not None and channel not in rules.kinds:
        # A kind no channel makes would be an address no message ever comes from: a typo.
        raise InvalidAddress(
            f"unknown identity kind {channel!r}{did_you_mean(channel, rules.kinds)}: "
            f"known kinds are {', '.join(sorted(rules.kinds))}"
        )
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
