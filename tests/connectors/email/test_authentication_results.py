"""A mail's Authentication-Results, as the trusted receiving server wrote them: a forged From
(DMARC failed) is parked instead of filed as that customer's, and only a sender the server
vouched for gets a reply copied to the other people it names (``trusted_authserv_id``).

Without it (the README's known limitation) a mail forging a customer's From was filed as
theirs, and with reply_all the agent's answer copied whatever Cc it claimed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.email.connector import EmailConnector
from connectors.email.parse import ParsedEmail, parse_email
from connectors.email.settings import EmailSettings
from connectors.sdk import Malformed

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def settings(**extra: object) -> EmailSettings:
    s = EmailConnector.from_config({"domains": ["support.test"], **extra}).settings
    assert isinstance(s, EmailSettings)
    return s


def parsed(*results: str, trusted: str = "mx.support.test") -> ParsedEmail:
    fields = b"".join(b"Authentication-Results: " + r.encode() + b"\r\n" for r in results)
    raw = (
        b"From: Ann <ann@customer.test>\r\nTo: support@support.test\r\nCc: boss@customer.test\r\n"
        + fields
        + b"Subject: invoice\r\nMessage-ID: <m1@customer.test>\r\n\r\nmy invoice is wrong\r\n"
    )
    return parse_email(
        raw,
        recipients=["support@support.test"],
        settings=settings(trusted_authserv_id=trusted),
        received_at=NOW,
        source="t",
    )


def test_a_mail_the_trusted_server_passed_is_filed_with_its_cc() -> None:
    p = parsed(
        "mx.support.test; spf=pass smtp.mailfrom=customer.test; dkim=pass header.d=customer.test;"
        " dmarc=pass (p=reject) header.from=customer.test"
    )
    assert p.message.metadata["dmarc"] == "pass" and p.message.metadata["cc"] == "boss@customer.test"


@pytest.mark.parametrize(
    "results",
    [
        ("mx.support.test; dmarc=fail (p=reject) header.from=customer.test",),
        ("MX.support.test 1; spf=fail; dmarc=fail header.from=customer.test",),  # id case, a version
        ("mx.support.test; dmarc=pass header.from=customer.test", "mx.support.test; dmarc=fail"),
    ],
)
def test_a_forged_from_is_parked_not_filed(results: tuple[str, ...]) -> None:
    with pytest.raises(Malformed, match=r"DMARC failed at mx\.support\.test"):
        parsed(*results)


@pytest.mark.parametrize(
    "results",
    [
        (),  # the server wrote nothing
        ("mx.support.test; dmarc=none header.from=customer.test",),  # no DMARC policy published
        ("mx.support.test; dmarc=temperror",),
        # Written by the sender, or by another server: never trusted, whatever it says.
        ("evil.example; dmarc=pass header.from=customer.test",),
        ("mail.customer.test; dmarc=pass",),
        # The trusted server's pass, but for another From than the one filed (two From fields,
        # say: the attacker's domain passed, the customer's address is filed).
        ("mx.support.test; dmarc=pass header.from=evil.example",),
        ("mx.support.test; dmarc=pass header.from=customer.test.evil.example",),
    ],
)
def test_a_sender_nobody_vouched_for_is_filed_but_copies_nobody(results: tuple[str, ...]) -> None:
    p = parsed(*results)
    assert p.message.metadata["dmarc"] == "none" and "cc" not in p.message.metadata


def test_without_a_trusted_server_nothing_is_checked() -> None:
    p = parsed("mx.support.test; dmarc=fail", trusted="")
    assert "dmarc" not in p.message.metadata and p.message.metadata["cc"] == "boss@customer.test"


@pytest.mark.parametrize(
    "results",
    [
        # No DMARC policy published, but the domain signed it: what DMARC would have asked.
        ("mx.support.test; dkim=pass header.d=customer.test header.s=sel; dmarc=none",),
        ("mx.support.test; dkim=pass (good signature) header.d=customer.test",),  # no DMARC result
        ("mx.support.test; spf=pass smtp.mailfrom=bounces@customer.test",),
        ("mx.support.test; dkim=pass header.d=CUSTOMER.test.",),  # case, a trailing dot
    ],
)
def test_a_domain_without_dmarc_passes_on_its_own_signature(results: tuple[str, ...]) -> None:
    """Without this a domain that publishes no DMARC policy never passed: its mail copied nobody."""
    p = parsed(*results)
    assert p.message.metadata["dmarc"] == "pass" and p.message.metadata["cc"] == "boss@customer.test"


@pytest.mark.parametrize(
    "results",
    [
        ("mx.support.test; dkim=pass header.d=evil.test; dmarc=none",),  # someone else's signature
        ("mx.support.test; dkim=pass header.d=test",),  # a bare top-level domain vouches for nobody
        ("mx.support.test; dkim=pass header.d=mail.customer.test",),  # a subdomain's, not the From's
        ("mx.support.test; dkim=fail header.d=customer.test",),
        ("mx.support.test; spf=pass smtp.mailfrom=x@evil.test",),
        ("evil.example; dkim=pass header.d=customer.test",),  # another server's word
    ],
)
def test_a_signature_that_does_not_vouch_for_the_from_passes_nothing(results: tuple[str, ...]) -> None:
    p = parsed(*results)
    assert p.message.metadata["dmarc"] == "none" and "cc" not in p.message.metadata


def test_dmarc_fail_wins_over_a_passing_signature() -> None:
    with pytest.raises(Malformed, match="DMARC failed"):
        parsed("mx.support.test; dkim=pass header.d=customer.test; dmarc=fail")


def test_a_mail_with_two_from_fields_is_parked_when_senders_are_checked() -> None:
    """The trusted server may have judged one From and the parser filed the other: a pass for
    the attacker's own domain filed under the customer's address (found by a hostile-mail audit)."""
    raw = (
        b"From: Ann <ann@customer.test>\r\nFrom: Eve <eve@evil.example>\r\nTo: support@support.test\r\n"
        b"Authentication-Results: mx.support.test; dmarc=pass header.from=evil.example\r\n"
        b"Subject: invoice\r\nMessage-ID: <m2@evil.example>\r\n\r\npay here\r\n"
    )
    with pytest.raises(Malformed, match="more than one From"):
        parse_email(
            raw,
            recipients=["support@support.test"],
            settings=settings(trusted_authserv_id="mx.support.test"),
            received_at=NOW,
            source="t",
        )
