"""The SMS connector's own Twilio signature code against Twilio's RequestValidator and the vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from connectors.sms import signature

PUBLISHED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PUBLISHED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_published_vector() -> None:
    assert signature.compute("12345", PUBLISHED_URL, PUBLISHED_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature.valid("12345", PUBLISHED_URL, PUBLISHED_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_published_vector_with_default_port() -> None:
    url = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert signature.valid("12345", url, PUBLISHED_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_json_vector() -> None:
    body = b'{"property": "value", "boolean": true}'
    url = PUBLISHED_URL + "&bodySHA256=" + hashlib.sha256(body).hexdigest()
    assert url.endswith("0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620")
    assert signature.body_hash_ok(url, body) is True
    assert signature.body_hash_ok(url, body + b" ") is False
    assert signature.valid("12345", url, (), "a9nBmqA0ju/hNViExpshrM61xv4=")


def test_wrong_token_url_or_param_fails() -> None:
    sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert not signature.valid("54321", PUBLISHED_URL, PUBLISHED_PARAMS, sig)
    assert not signature.valid("12345", PUBLISHED_URL + "&x=1", PUBLISHED_PARAMS, sig)
    assert not signature.valid("12345", PUBLISHED_URL, {**PUBLISHED_PARAMS, "Digits": "1235"}, sig)
    assert not signature.valid("12345", PUBLISHED_URL, {**PUBLISHED_PARAMS, "Extra": ""}, sig)
    assert not signature.valid("12345", PUBLISHED_URL, PUBLISHED_PARAMS, "")
    assert not signature.valid("", PUBLISHED_URL, PUBLISHED_PARAMS, sig)


@pytest.mark.parametrize(
    ("url", "variants"),
    [
        ("https://a.example/x", ["https://a.example/x", "https://a.example:443/x"]),
        ("https://a.example:443/x?q=1", ["https://a.example:443/x?q=1", "https://a.example/x?q=1"]),
        ("http://a.example/x", ["http://a.example/x", "http://a.example:80/x"]),
        ("http://127.0.0.1:8081/twilio/sms", ["http://127.0.0.1:8081/twilio/sms"]),
    ],
)
def test_url_variants(url: str, variants: list[str]) -> None:
    assert signature.url_variants(url) == variants


def test_sha256_algorithm_matches_validator() -> None:
    validator = RequestValidator("secret")
    expected = validator.compute_signature(PUBLISHED_URL, PUBLISHED_PARAMS, "HMAC_SHA256")
    assert signature.compute("secret", PUBLISHED_URL, PUBLISHED_PARAMS, "HMAC_SHA256") == expected
    assert signature.algorithm_of("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256") == "HMAC_SHA256"
    assert signature.algorithm_of(None) == "HMAC_SHA1"


def test_repeated_params_match_validator() -> None:
    params = MultiDict([("MediaUrl0", "b"), ("MediaUrl0", "a"), ("Body", "x"), ("Body", "x")])
    expected = RequestValidator("tok").compute_signature("https://h/p", params)
    assert signature.compute("tok", "https://h/p", params) == expected


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    token=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    params=st.dictionaries(st.text(min_size=1, max_size=12), _text, max_size=8),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz/-_", max_size=20),
)
def test_matches_request_validator(token: str, params: dict[str, str], path: str) -> None:
    url = f"https://relay.example.com/{path}?a=1"
    validator = RequestValidator(token)
    ours = signature.compute(token, url, params)
    assert ours == validator.compute_signature(url, params)
    assert validator.validate(url, params, ours)
    assert signature.valid(token, url, params, validator.compute_signature(url, params))
