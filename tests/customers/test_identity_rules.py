"""Address normalisation: universal rules always, provider-specific email rules only for the
domains configured; operator-typed identities; masked identities for reports."""

from __future__ import annotations

import pytest

from services.config import IntakeSettings
from services.identity.addresses import IdentityRules, InvalidAddress, earlier_forms, identity_for, mask, parse_identity

GMAIL = IdentityRules.from_settings(
    IntakeSettings(
        email_ignore_dots=("gmail.com",),
        email_strip_plus=("gmail.com", "Outlook.com"),
        email_domain_aliases={"googlemail.com": "gmail.com"},
    )
)


def test_without_configured_domains_only_the_domain_is_case_folded() -> None:
    assert identity_for("email", "A.B+x@GMail.com") == "email:A.B+x@gmail.com"


@pytest.mark.parametrize(
    ("address", "identity"),
    [
        ("a.b+news@gmail.com", "email:ab@gmail.com"),
        ("A.B@GoogleMail.com", "email:ab@gmail.com"),
        ("ab@gmail.com", "email:ab@gmail.com"),
        ("first.last+shop@outlook.com", "email:first.last@outlook.com"),  # plus only, dots kept
        ("a.b+x@example.com", "email:a.b+x@example.com"),  # not configured: untouched
    ],
)
def test_provider_rules_apply_only_where_configured(address: str, identity: str) -> None:
    assert identity_for("email", address, rules=GMAIL) == identity


@pytest.mark.parametrize("address", ["+x@gmail.com", "...@gmail.com", "no-at-sign", "a b@example.com", "@x.com"])
def test_bad_email_addresses(address: str) -> None:
    with pytest.raises(InvalidAddress):
        identity_for("email", address, rules=GMAIL)


def test_operator_identities() -> None:
    assert parse_identity("sms:+1 (555) 123-4567") == "phone:+15551234567"
    assert parse_identity("whatsapp:15551234567") == "phone:+15551234567"
    assert parse_identity("phone:+15551234567") == "phone:+15551234567"
    assert parse_identity("Email:Ann@Example.COM") == "email:Ann@example.com"
    assert parse_identity("chat: visitor-1 ") == "chat:visitor-1"
    assert parse_identity("email:a.b+x@googlemail.com", GMAIL) == "email:ab@gmail.com"
    for bad in ("+15551234567", "sms:", "sms:12", ":x", "two words:x"):
        with pytest.raises(InvalidAddress):
            parse_identity(bad)


def test_region_for_national_numbers() -> None:
    assert identity_for("sms", "020 7946 0958", rules=IdentityRules(default_region="GB")) == "phone:+442079460958"


def test_masks_keep_addresses_out_of_reports() -> None:
    assert mask("email:ann@example.com") == "email:a…@example.com"
    assert mask("phone:+15551234567") == "phone:…4567"
    assert mask("sms:12") == "sms:…"


def test_intake_applies_the_configured_rules() -> None:
    from datetime import UTC, datetime

    from events.model import InboundMessage
    from services.intake import Intake

    def sender(address: str, settings: IntakeSettings) -> str:
        intake = Intake(store=None, directory=None, settings=settings)  # type: ignore[arg-type]
        message = InboundMessage(
            at=datetime.now(UTC), channel="email", provider="smtp", provider_message_id="m1", sender=address
        )
        return intake.triage(message).identity

    configured = IntakeSettings(email_ignore_dots=("gmail.com",), email_strip_plus=("gmail.com",))
    assert sender("A.B+shop@Gmail.com", configured) == sender("ab@gmail.com", configured) == "email:ab@gmail.com"
    assert sender("A.B+shop@Gmail.com", IntakeSettings()) == "email:A.B+shop@gmail.com"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("jos\u00e9@example.com", "jose\u0301@example.com"),  # NFC and NFD (a Mac's keyboard)
        ("ann@B\u00fccher.de", "ann@xn--bcher-kva.de"),  # an IDN domain, Unicode and A-label
        ("ann@b\u00fccher.de", "ann@XN--BCHER-KVA.DE"),
        ("ann@stra\u00dfe.de", "ann@xn--strae-oqa.de"),
    ],
)
def test_one_address_written_two_ways_is_one_identity(one: str, other: str) -> None:
    assert identity_for("email", one) == identity_for("email", other)


def test_an_idn_domain_is_kept_in_its_unicode_form_and_eszett_is_not_folded_to_ss() -> None:
    # straße.de (xn--strae-oqa.de) and strasse.de are two domains, two people: case folding
    # made them one customer.
    assert identity_for("email", "ann@xn--bcher-kva.de") == "email:ann@b\u00fccher.de"
    assert identity_for("email", "ann@Stra\u00dfe.de") == "email:ann@stra\u00dfe.de"
    assert identity_for("email", "ann@STRASSE.de") == "email:ann@strasse.de"
    assert identity_for("email", "a@foo_bar.COM") == "email:a@foo_bar.com"  # not IDNA-valid: lower-cased


def test_earlier_forms_name_what_earlier_versions_stored() -> None:
    assert earlier_forms("email:ann@example.com") == ()
    assert earlier_forms("phone:+15551234567") == ()
    assert earlier_forms("email:jos\u00e9@b\u00fccher.de") == (
        "email:jose\u0301@b\u00fccher.de",
        "email:jose\u0301@xn--bcher-kva.de",
        "email:jos\u00e9@xn--bcher-kva.de",
    )
