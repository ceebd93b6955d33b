"""The SDK's HMAC webhook helpers (connectors.sdk.signatures) against published vectors:
RFC 4231, Meta's (wire-formats.md) and Slack's own walkthrough."""

from __future__ import annotations

import base64

import pytest

from connectors.sdk.signatures import (
    constant_time_equal,
    first_match,
    hmac_sha256_base64,
    hmac_sha256_hex,
    open_with_any,
    sign,
    timestamp_fresh,
    verify_hmac_sha256,
    verify_timestamped,
)
from connectors.social import signature as meta
from tests.agents.test_slack_units import DOC_BODY, DOC_SECRET, DOC_SIGNATURE, DOC_TIMESTAMP
from tests.connectors.social.payloads import APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE

# RFC 4231, test case 2.
RFC_KEY = "Jefe"
RFC_DATA = b"what do ya want for nothing?"
RFC_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def slack_message(timestamp: str, body: bytes) -> bytes:
    return b"v0:" + timestamp.encode() + b":" + body


def test_hex_and_base64_match_rfc_4231() -> None:
    assert hmac_sha256_hex(RFC_KEY, RFC_DATA) == RFC_HEX
    assert hmac_sha256_hex(RFC_KEY.encode(), RFC_DATA) == RFC_HEX
    assert hmac_sha256_base64(RFC_KEY, RFC_DATA) == base64.b64encode(bytes.fromhex(RFC_HEX)).decode()
    assert verify_hmac_sha256(RFC_KEY, RFC_DATA, base64.b64encode(bytes.fromhex(RFC_HEX)).decode(), encoding="base64")


def test_metas_vector_verifies_and_anything_else_does_not() -> None:
    assert sign(APP_SECRET, VECTOR_BODY, prefix="sha256=") == VECTOR_SIGNATURE
    assert verify_hmac_sha256(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE, prefix="sha256=")
    assert verify_hmac_sha256(APP_SECRET, VECTOR_BODY, " SHA256=" + VECTOR_SIGNATURE[7:].upper(), prefix="sha256=")
    assert not verify_hmac_sha256(APP_SECRET, VECTOR_BODY + b" ", VECTOR_SIGNATURE, prefix="sha256=")
    assert not verify_hmac_sha256("other", VECTOR_BODY, VECTOR_SIGNATURE, prefix="sha256=")
    assert not verify_hmac_sha256(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE[7:], prefix="sha256=")  # no prefix
    assert not verify_hmac_sha256(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE[:-1], prefix="sha256=")  # truncated
    assert not verify_hmac_sha256(APP_SECRET, VECTOR_BODY, "sha256=é" * 9, prefix="sha256=")  # non-ASCII
    assert not verify_hmac_sha256(APP_SECRET, VECTOR_BODY, None, prefix="sha256=")
    assert not verify_hmac_sha256("", VECTOR_BODY, VECTOR_SIGNATURE, prefix="sha256=")  # no secret: refuse all
    # The Meta connector uses the helper: the same answers through its own module.
    assert meta.sign(APP_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    assert meta.valid(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)
    assert not meta.valid(APP_SECRET, VECTOR_BODY, "sha256=" + "0" * 64)


def test_slacks_walkthrough_with_the_clock_checked() -> None:
    def verify(timestamp: str | None, given: str | None = DOC_SIGNATURE, now: float = 1531420618 + 10) -> bool:
        return verify_timestamped(
            DOC_SECRET, timestamp, DOC_BODY, given, signed=slack_message, prefix="v0=", tolerance=300, now=now
        )

    assert verify(DOC_TIMESTAMP)
    assert verify(DOC_TIMESTAMP, now=1531420618 - 300)  # a clock slightly behind the sender's
    assert not verify(DOC_TIMESTAMP, now=1531420618 + 301)  # replayed later
    assert not verify("1531420619")  # the timestamp is signed: changing it breaks the MAC
    assert not verify(DOC_TIMESTAMP, given="v0=" + "0" * 64)
    assert not verify(None)
    assert not verify("soon")
    assert not verify("١٥٣١٤٢٠٦١٨")  # non-ASCII digits are not a timestamp


def test_stripe_style_dot_joined_default() -> None:
    body, t = b'{"id":"evt_1"}', "1700000000"
    given = sign("whsec", t.encode() + b"." + body)
    assert verify_timestamped("whsec", t, body, given, now=1_700_000_100)
    assert not verify_timestamped("whsec", t, body, given, now=1_700_000_301)


def test_timestamp_freshness() -> None:
    assert timestamp_fresh("1000", now=1200, tolerance=300)
    assert timestamp_fresh(1300.5, now=1000, tolerance=300.5)
    assert not timestamp_fresh("1000", now=1301, tolerance=300)
    assert not timestamp_fresh("nan", now=1000)
    assert not timestamp_fresh("inf", now=1000)
    assert not timestamp_fresh(None)
    assert not timestamp_fresh(True, now=1)


def test_constant_time_equal() -> None:
    assert constant_time_equal("abc", "abc")
    assert not constant_time_equal("abc", "abd")
    assert not constant_time_equal("abc", "ab")
    assert not constant_time_equal("abc", "ábc")


def test_first_match_checks_every_secret_and_names_the_first_that_matched() -> None:
    checked: list[str] = []

    def check(secret: str) -> bool:
        checked.append(secret)
        return secret in ("b", "c")

    assert first_match(["a", "b", "c", "d"], check) == 1
    assert checked == ["a", "b", "c", "d"]  # no early exit: the time does not say which one
    assert first_match(["a", "d"], check) is None
    assert first_match([], check) is None


def test_first_match_never_takes_an_empty_secret() -> None:
    checked: list[str | bytes] = []

    def anything(secret: str | bytes) -> bool:
        checked.append(secret)
        return True

    assert first_match(["", "new"], anything) == 1  # indexes count the skipped ones
    assert first_match([b"", b""], anything) is None
    assert checked == ["new"]


class Refused(Exception):
    pass


def test_open_with_any_tries_every_key_and_gives_the_first_opening() -> None:
    tried: list[str] = []

    def open_(key: str) -> bytes | None:
        tried.append(key)
        if key == "bad":
            raise Refused
        return {"old": b"", "new": b"plain"}.get(key)

    assert open_with_any(["bad", "old", "new", "other"], open_, (Refused,)) == b""  # falsy yet opened
    assert tried == ["bad", "old", "new", "other"]
    assert open_with_any(["new", "old"], open_, (Refused,)) == b"plain"
    assert open_with_any(["other", "bad"], open_, (Refused,)) is None
    assert open_with_any(["", ""], lambda key: b"opened by anything", (Refused,)) is None
    with pytest.raises(Refused):  # only the refusals named are "not this key"
        open_with_any(["bad"], open_)
