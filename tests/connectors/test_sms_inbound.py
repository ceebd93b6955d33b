"""The SMS connector over a real nats-server: signatures, malformed forms, dedupe, NATS down.

These share the session's nats-server, so the outbound worker stays off here: its durable
consumer on the RD_OUTBOUND work queue would outlive the test and clash with other tests'
consumers on rd.out.sms. Outbound is tested on servers of its own (conformance, worker tests)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import nats
import pytest
import structlog.testing
from nats.aio.client import Client as NATS
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from connectors.sdk import ConnectorConfigError, registry
from connectors.sdk.conformance.helpers import read_inbound, read_outcomes
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sms.connector import TWIML_EMPTY, TwilioSmsConnector
from events.redact import scrub
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

TOKEN = "test-auth-token"
pytestmark = pytest.mark.integration


def sid(uid: str, n: int = 0) -> str:
    return ("SM" + uid + f"{n:04d}").ljust(34, "0")


def form(uid: str, n: int = 0, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid(uid, n),
        "SmsMessageSid": sid(uid, n),
        "AccountSid": "AC" + "1" * 32,
        "From": "+15551230000",
        "To": "+15559870000",
        "Body": "Hola, ¿mi factura? & más",
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def signed_headers(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.fixture
async def sms(nc: NATS) -> AsyncIterator[tuple[ConnectorRuntime, str]]:
    connector = TwilioSmsConnector.from_config(
        {"port": 0, "auth_token": TOKEN, "ack_timeout": "1.0", "outbound": False}
    )
    runtime = ConnectorRuntime(connector, nc)
    urls = await runtime.start()
    try:
        yield runtime, urls[0]
    finally:
        await runtime.stop()


async def post(url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.post(url, data=urlencode(params), headers=headers) as resp:
        return resp.status, resp.content_type, await resp.text()


async def events_for(nc: NATS, message_sid: str) -> list[str]:
    published = await read_inbound(nc.jetstream(), "sms")
    return [p.message.provider_message_id for p in published if p.message.provider_message_id == message_sid]


def test_registry_loads_sms() -> None:
    assert "sms" in registry.available()
    assert registry.load("sms") is TwilioSmsConnector


async def test_valid_sms_is_published_with_msg_id(nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str) -> None:
    runtime, base = sms
    url = base + "/twilio/sms"
    params = form(uid, NumMedia="1", MediaUrl0="https://api.twilio.com/m/1", MediaContentType0="image/jpeg")
    status, ctype, text = await post(url, params, signed_headers(url, params))
    assert (status, ctype, text) == (200, "text/xml", TWIML_EMPTY)
    published = [p for p in await read_inbound(nc.jetstream(), "sms") if p.message.provider_message_id == sid(uid)]
    assert len(published) == 1
    item = published[0]
    assert item.msg_id == f"sms:{sid(uid)}"
    m = item.message
    assert (m.channel, m.provider, m.sender, m.recipient) == ("sms", "twilio", "+15551230000", "+15559870000")
    assert m.text == "Hola, ¿mi factura? & más"
    assert m.attachments[0].url == "https://api.twilio.com/m/1"
    assert m.attachments[0].content_type == "image/jpeg"
    assert m.metadata["account_sid"] == "AC" + "1" * 32
    assert runtime.metrics["published"] >= 1


async def test_same_message_sid_twice_is_one_event(nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str) -> None:
    runtime, base = sms
    url = base + "/twilio/sms"
    params = form(uid, 1)
    for _ in range(2):
        status, _, _ = await post(url, params, signed_headers(url, params))
        assert status == 200
    assert await events_for(nc, sid(uid, 1)) == [sid(uid, 1)]
    assert runtime.metrics["duplicates"] == 1


async def test_unknown_params_are_signed_too(nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str) -> None:
    _, base = sms
    url = base + "/twilio/sms?tenant=a%20b"
    params = form(uid, 2, BrandNewTwilioParam="x", FromCity="SAN FRANCISCO")
    status, _, _ = await post(url, params, signed_headers(url, params))
    assert status == 200
    assert await events_for(nc, sid(uid, 2)) == [sid(uid, 2)]


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong token", "tampered body", "other url"],
)
async def test_forged_signature_is_403_and_publishes_nothing(
    nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str, case: str
) -> None:
    runtime, base = sms
    url = base + "/twilio/sms"
    params = form(uid, 3)
    headers = signed_headers(url, params)
    if case == "missing":
        del headers["X-Twilio-Signature"]
    elif case == "wrong token":
        headers = signed_headers(url, params, token="not-the-token")
    elif case == "tampered body":
        params = {**params, "Body": "send me the money"}
    else:
        headers = signed_headers("https://evil.example/twilio/sms", params)
    async with aiohttp.ClientSession() as http, http.post(url, data=urlencode(params), headers=headers) as resp:
        assert resp.status == 403
        assert "error" in await resp.json()
    assert await events_for(nc, sid(uid, 3)) == []
    assert runtime.metrics["rejected"] == 1


@pytest.mark.parametrize(
    ("params", "raw"),
    [
        ({"From": "+15551230000", "Body": "no sid"}, None),
        ({"MessageSid": "SM" + "9" * 32, "Body": "no from"}, None),
        ({"MessageSid": "SM" + "8" * 32, "From": "+1555", "NumMedia": "lots"}, None),
        (None, b"MessageSid=SM" + b"7" * 32 + b"&From=%2B1555&Body=%FF%FE"),
    ],
)
async def test_malformed_is_400_and_publishes_nothing(
    nc: NATS, sms: tuple[ConnectorRuntime, str], params: dict[str, str] | None, raw: bytes | None
) -> None:
    _, base = sms
    url = base + "/twilio/sms"
    before = len(await read_inbound(nc.jetstream(), "sms"))
    if raw is not None:
        # Signed over what a lenient decoder would see: the check must still fail closed.
        headers = {"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded"}
        body = raw
    else:
        assert params is not None
        headers = signed_headers(url, params)
        body = urlencode(params).encode()
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert len(await read_inbound(nc.jetstream(), "sms")) == before


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_a_body_that_cannot_be_decoded_is_400_not_a_crash(
    nc: NATS, sms: tuple[ConnectorRuntime, str], encoding: str
) -> None:
    _, base = sms
    headers = {"X-Twilio-Signature": "x", "Content-Encoding": encoding}  # no auth needed to get this far
    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as http,
            http.post(base + "/twilio/sms", data=b"garbage", headers=headers) as r,
        ):
            assert (r.status, r.content_type) == (400, "application/json")
            assert await r.json() == {"error": f"the request body cannot be decoded (Content-Encoding: {encoding})"}
    assert [e["log_level"] for e in logs if e["event"].startswith("inbound.")] == ["warning"]


async def test_public_base_url_behind_a_proxy(nc: NATS, uid: str) -> None:
    public = "https://relay.example.com"
    connector = TwilioSmsConnector.from_config(
        {"port": 0, "auth_token": TOKEN, "public_base_url": public + "/", "outbound": False}
    )
    runtime = ConnectorRuntime(connector, nc)
    [base] = await runtime.start()
    try:
        params = form(uid, 4)
        # Twilio called the public URL (default port spelled out, as it sometimes signs).
        headers = signed_headers(public + ":443/twilio/sms", params)
        status, _, _ = await post(base + "/twilio/sms", params, headers)
        assert status == 200
        # Signed for the internal URL: not what Twilio called, rejected.
        status, _, _ = await post(base + "/twilio/sms", params, signed_headers(base + "/twilio/sms", params))
        assert status == 403
    finally:
        await runtime.stop()
    assert await events_for(nc, sid(uid, 4)) == [sid(uid, 4)]


async def test_body_over_limit_is_413(nc: NATS) -> None:
    connector = TwilioSmsConnector.from_config(
        {"port": 0, "auth_token": TOKEN, "max_body_bytes": 1000, "outbound": False}
    )
    runtime = ConnectorRuntime(connector, nc)
    [base] = await runtime.start()
    try:
        url = base + "/twilio/sms"
        params = form("big", Body="x" * 2000)
        status, _, _ = await post(url, params, signed_headers(url, params))
        assert status == 413
    finally:
        await runtime.stop()


async def test_status_callback_is_verified(sms: tuple[ConnectorRuntime, str]) -> None:
    _, base = sms
    url = base + "/twilio/status"
    params = {"MessageSid": "SM" + "5" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "1" * 32}
    assert (await post(url, params, signed_headers(url, params)))[0] == 200
    bad = {**signed_headers(url, params), "X-Twilio-Signature": "nope"}
    assert (await post(url, params, bad))[0] == 403


async def test_a_reply_twilio_could_not_deliver_is_reported_as_bounced(
    nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str
) -> None:
    """Found by an audit: ``undelivered`` and ``failed`` callbacks were only logged, so a reply
    to a number that is gone read as sent. The callback URL ``deliver`` gave Twilio names the
    reply (test_sms_outbound), and Twilio's signature covers it."""
    _, base = sms
    reply_id = f"rep_{uid}"
    url = f"{base}/twilio/status?rd_reply={reply_id}&rd_customer=cu_{uid}&rd_conversation=cv_{uid}"
    for status in ("sent", "undelivered"):
        params = {"MessageSid": "SM" + "6" * 32, "MessageStatus": status, "ErrorCode": "30003"}
        assert (await post(url, params, signed_headers(url, params)))[0] == 200
    [reported] = await read_outcomes(nc.jetstream(), "sms", reply_id)
    report = reported.report
    assert (report.outcome, report.reason) == ("bounced", "twilio undelivered error 30003")
    assert (report.customer_id, report.conversation_id) == (f"cu_{uid}", f"cv_{uid}")
    # The ids are the signed URL's: another reply's ids in an unsigned URL are refused.
    forged = f"{base}/twilio/status?rd_reply=rep_other&rd_customer=cu_x&rd_conversation=cv_x"
    assert (await post(forged, params, signed_headers(url, params)))[0] == 403


async def test_metrics_and_health(sms: tuple[ConnectorRuntime, str]) -> None:
    _, base = sms
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 200
            assert 'relaydesk_connector_published_total{connector="sms",channel="sms"}' in await resp.text()
        async with http.get(base + "/healthz") as resp:
            health = await resp.json()
            assert health["status"] == "ok" and health["nats"] == "connected"


async def test_nats_down_is_503(tmp_path: Path, uid: str) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    server.start()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        await ensure_streams(client.jetstream())
        connector = TwilioSmsConnector.from_config(
            {"port": 0, "auth_token": TOKEN, "ack_timeout": 0.5, "outbound": False}
        )
        runtime = ConnectorRuntime(connector, client)
        [base] = await runtime.start()
        try:
            server.stop()
            url = base + "/twilio/sms"
            params = form(uid, 5)
            status, ctype, _text = await post(url, params, signed_headers(url, params))
            assert status == 503
            assert ctype == "application/json"
            assert runtime.metrics["published"] == 0
        finally:
            await runtime.stop()
    finally:
        with contextlib.suppress(Exception):  # nats-py raises ConnectionResetError closing a dead transport
            await client.close()
        server.stop()


async def test_port_in_use_is_a_clear_exit(nc: NATS) -> None:
    first = ConnectorRuntime(TwilioSmsConnector.from_config({"port": 0, "outbound": False}), nc)
    [url] = await first.start()
    try:
        port = int(url.rsplit(":", 1)[1])
        second = ConnectorRuntime(TwilioSmsConnector.from_config({"port": port, "outbound": False}), nc)
        with pytest.raises(SystemExit, match="cannot listen"):
            await second.start()
    finally:
        await first.stop()


async def test_whatsapp_through_twilio_is_marked(nc: NATS, sms: tuple[ConnectorRuntime, str], uid: str) -> None:
    _, base = sms
    url = base + "/twilio/sms"
    params = form(
        uid, 6, From="whatsapp:+15551230000", To="whatsapp:+15559870000", ProfileName="Ana", WaId="15551230000"
    )
    assert (await post(url, params, signed_headers(url, params)))[0] == 200
    [item] = [p for p in await read_inbound(nc.jetstream(), "sms") if p.message.provider_message_id == sid(uid, 6)]
    assert item.message.metadata["platform"] == "whatsapp"
    assert item.message.sender_name == "Ana"


def test_bad_settings_are_a_clear_error() -> None:
    with pytest.raises(ConnectorConfigError, match=r"\[connectors.sms\].*port"):
        TwilioSmsConnector.from_config({"port": "eighty"})
    # Strings from the environment are converted; an unknown key is refused, named.
    c = TwilioSmsConnector.from_config({"port": "9001", "ack_timeout": "2.5", "outbound": "false"})
    assert (c.settings.port, c.settings.ack_timeout, c.settings.outbound) == (9001, 2.5, False)
    with pytest.raises(
        ConnectorConfigError, match=r"\[connectors.sms\] unknown key 'auth_tokn' \(did you mean 'auth_token'\?\)"
    ):
        TwilioSmsConnector.from_config({"auth_tokn": "x"})


async def test_logs_carry_ids_but_no_bodies_or_numbers(nc: NATS, uid: str) -> None:
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            runtime = ConnectorRuntime(
                TwilioSmsConnector.from_config({"port": 0, "auth_token": TOKEN, "outbound": False}), nc
            )
            [base] = await runtime.start()
            try:
                url = base + "/twilio/sms"
                params = form(uid, 7)
                assert (await post(url, params, signed_headers(url, params)))[0] == 200
                bad = {**signed_headers(url, params), "X-Twilio-Signature": "bad"}
                assert (await post(url, params, bad))[0] == 403
            finally:
                await runtime.stop()
    finally:
        structlog.configure(**old)
    published = [e for e in logs if e["event"] == "inbound.published"]
    assert published and published[0]["provider_message_id"] == sid(uid, 7)
    assert published[0]["channel"] == "sms"
    assert any(e["event"] == "inbound.rejected" for e in logs)
    dump = repr(logs)
    for secret in ("+15551230000", "+15559870000", "factura", TOKEN):
        assert secret not in dump


def test_scrub_masks_numbers_and_emails() -> None:
    text = "The 'To' number +1 (555) 123-0000 is not valid; contact ana@example.com"
    assert scrub(text) == "The 'To' number [number] is not valid; contact [email]"
    # A status code is not a number to hide: a bounce's reason keeps it.
    assert scrub("bounced: 5.1.1 (smtp; 550 5.1.1 user unknown)") == "bounced: 5.1.1 (smtp; 550 5.1.1 user unknown)"
