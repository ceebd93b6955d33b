"""The SMS connector's hot path stays lean: the form is parsed once per webhook (by a parser
that gives exactly ``parse_qsl``'s pairs), nothing per message is logged above debug, and the
benchmark's load generator signs webhooks the connector accepts."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from urllib.parse import parse_qsl

import aiohttp
import pytest
import structlog.testing
from multidict import CIMultiDict, CIMultiDictProxy
from nats.aio.client import Client as NATS

from connectors.sdk import Malformed, Unauthentic
from connectors.sdk import base as sdk_base
from connectors.sdk.base import ProviderRequest, parse_form
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sms import signature
from connectors.sms.connector import TwilioSmsConnector
from services.bench.loadgen import signed_request, twilio_params

TOKEN = "hot-path-token"


def _strict_qsl(text: str) -> list[tuple[str, str]] | type[BaseException]:
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as err:
        return type(err)


def _ours(text: str) -> list[tuple[str, str]] | type[BaseException]:
    try:
        return parse_form(text)
    except (UnicodeDecodeError, ValueError) as err:
        return type(err)


@pytest.mark.parametrize(
    "text",
    ["", "a", "a=", "=b", "a=1&&b=2", "a+b=c+d", "x=%2B1555%20%C3%A9", "a=1&a=2&b", "%41=%62", "a=b=c", "&&",
     "a=%zz", "a=%", "é=ü+%25", "Body=Hola%2C+%C2%BFmi+factura%3F+%26+m%C3%A1s", "a=%FF", "%C3=1"],
)  # fmt: skip
def test_parse_form_gives_parse_qsl_pairs(text: str) -> None:
    assert _ours(text) == _strict_qsl(text)


def test_parse_form_matches_parse_qsl_on_random_forms() -> None:
    rng = random.Random(10)
    alphabet = "ab=&+%2F0CFé "
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert _ours(text) == _strict_qsl(text), text


def _request(body: bytes) -> ProviderRequest:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"}))
    return ProviderRequest("POST", "http", "h", "/twilio/sms", headers, body)


def test_form_is_parsed_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(text: str) -> list[tuple[str, str]]:
        calls.append(text)
        return parse_qsl(text, keep_blank_values=True)

    monkeypatch.setattr(sdk_base, "parse_form", counting)
    request = _request(b"a=1&b=2&a=3")
    first = request.form()
    assert request.form() is first
    assert first.getall("a") == ["1", "3"]
    assert len(calls) == 1
    # Two requests never share a form.
    assert _request(b"c=4").form()["c"] == "4"
    assert len(calls) == 2


def test_bad_form_is_malformed_every_time() -> None:
    request = _request(b"a=%FF")
    for _ in range(2):
        with pytest.raises(Malformed):
            request.form()


def test_url_variants_are_a_fresh_list_each_call() -> None:
    url = "https://example.com/twilio/sms"
    first = signature.url_variants(url)
    first.append("mutated")
    assert signature.url_variants(url) == [url, "https://example.com:443/twilio/sms"]


def test_loadgen_signs_what_the_connector_accepts() -> None:
    url = "http://127.0.0.1:8081/twilio/sms"
    raw = signed_request(url, TOKEN, twilio_params("ab", 7))
    head, body = raw.split(b"\r\n\r\n", 1)
    headers: CIMultiDict[str] = CIMultiDict()
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(": ")
        headers.add(name, value)
    request = ProviderRequest("POST", "http", "127.0.0.1:8081", "/twilio/sms", CIMultiDictProxy(headers), body)
    connector = TwilioSmsConnector.from_config({"auth_token": TOKEN})
    connector.verify(request)
    [message] = connector.parse(request)
    assert message.provider_message_id == "SMab000000000007"
    with pytest.raises(Unauthentic):
        TwilioSmsConnector.from_config({"auth_token": "another"}).verify(request)


@pytest.fixture
def info_level() -> Iterator[None]:
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield
    finally:
        structlog.configure(**old)


@pytest.mark.integration
async def test_no_log_line_per_webhook_at_info(nc: NATS, uid: str, info_level: None) -> None:
    runtime = ConnectorRuntime(TwilioSmsConnector.from_config({"port": 0, "auth_token": TOKEN, "outbound": False}), nc)
    [base] = await runtime.start()
    try:
        url = base + "/twilio/sms"
        with structlog.testing.capture_logs() as logs:
            async with aiohttp.ClientSession() as http:
                for n in range(3):
                    raw = signed_request(url, TOKEN, twilio_params(uid[:8], n))
                    head, body = raw.split(b"\r\n\r\n", 1)
                    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
                    headers.pop("Host"), headers.pop("Content-Length")
                    async with http.post(url, data=body, headers=headers) as resp:
                        assert resp.status == 200, await resp.text()
                # A refusal is still worth a line: the capture sees what is logged.
                headers["X-Twilio-Signature"] = "forged"
                async with http.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 403
        assert runtime.metrics["published"] + runtime.metrics["duplicates"] == 3
        assert [e["event"] for e in logs] == ["inbound.rejected"]
    finally:
        await runtime.stop()
