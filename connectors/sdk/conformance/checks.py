"""The kit's checks of what a connector's own samples do not show: names, the time a message is
dated, answers to bodies the provider never sends, a provider's ``Retry-After``, the event loop
and the log lines. Mixed into ``ConnectorConformance`` (``connectors.sdk.conformance.kit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from events.model import InboundMessage, MessageSent

from ..registry import name_problem
from .harness import Harness, SampleRequest
from .hygiene import leaks

if TYPE_CHECKING:
    from events.model import DeliverReply, DeliveryFailed

    from ..base import Connector

# How far ``InboundMessage.at`` may lie outside the request's round trip (s): clocks in one
# process agree; a provider's own time (a sample's fixed date) is minutes to years off.
AT_SLACK = timedelta(seconds=2)


class ContractChecks:
    """Tests and assertions ``ConnectorConformance`` inherits."""

    if TYPE_CHECKING:  # what they use of ConnectorConformance
        connector_class: ClassVar[type[Connector]]

        def valid_request(self, base_url: str) -> SampleRequest: ...
        async def _send_reply(self, harness: Harness) -> DeliverReply: ...
        async def _outcome(
            self, harness: Harness, reply: DeliverReply, timeout: float = 15.0
        ) -> MessageSent | DeliveryFailed: ...

    # -- names ----------------------------------------------------------------------------

    async def test_name_and_channel_are_channel_names(self) -> None:
        cls = self.connector_class
        for kind in ("name", "channel"):
            problem = name_problem(kind, getattr(cls, kind, None))
            assert problem is None, f"{cls.__name__}.{problem}: it names NATS subjects, durables and config tables"

    # -- inbound --------------------------------------------------------------------------

    def _dated_when_received(self, message: InboundMessage, before: datetime, after: datetime) -> None:
        at = message.at
        assert at.tzinfo is not None and at.utcoffset() is not None, (
            f"InboundMessage.at {at!r} has no time zone: use self.now() (UTC)"
        )
        assert before - AT_SLACK <= at <= after + AT_SLACK, (
            f"InboundMessage.at is {at.isoformat()}, not when the connector received the request"
            f" ({before.isoformat()}): date a message self.now() and put the provider's own time in"
            " metadata (provider_at); intake orders, retains and measures messages by it"
        )

    def unexpected_bodies(self, base_url: str) -> list[SampleRequest]:
        """The valid request's path and headers with bodies the provider never sends (empty,
        JSON of other shapes, the valid body cut in half, bytes that are not UTF-8): each must be
        refused with a 4xx (or taken as nothing, 2xx), never a 5xx, which a provider retries for
        days. Override to add your provider's own odd shapes."""
        sample = self.valid_request(base_url)
        bodies = [
            b"",
            b"{}",
            b"[]",
            b"null",
            b"0",
            b'"x"',
            b'{"a": {"b": [1, {}]}}',
            sample.body[: len(sample.body) // 2],
        ]
        bodies.append(b"\xff\xfe\x00garbage")
        return [SampleRequest(sample.path, body, sample.headers, sample.method) for body in bodies]

    async def test_bodies_the_provider_never_sends_are_4xx_not_5xx(self, harness: Harness) -> None:
        for sample in self.unexpected_bodies(harness.base_url):
            status, answer, _ = await harness.send(sample)
            assert status < 500, (
                f"an authenticated request with the body {sample.body[:60]!r} answered {status}: {answer[:200]!r}."
                " parse (and verify) must raise Malformed for what they cannot understand: a 5xx makes the"
                " provider retry it for days" + self._crash(harness)
            )
            assert await harness.published() == [], f"the body {sample.body[:60]!r} published an event"

    def _crash(self, harness: Harness) -> str:
        """The last exception the SDK logged (``inbound.crashed``), for an assertion's message."""
        for line in reversed(harness.logs):
            if line.get("event") == "inbound.crashed" and (trace := str(line.get("exception", "")).strip()):
                return f" (the connector raised {trace.splitlines()[-1]})"
        return ""

    # -- outbound -------------------------------------------------------------------------

    async def test_outbound_retry_after_is_honoured(self, harness: Harness) -> None:
        """The provider answers the first send 429 ``Retry-After: 1`` (``FakeProvider.throttled``,
        or the suite's ``throttle``): the second send comes no sooner, and the reply is sent."""
        harness.fake.throttle_next, harness.fake.throttle_seconds = 1, 1.0
        reply = await self._send_reply(harness)
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), f"expected MessageSent after the provider's 429, got {outcome!r}"
        sends = harness.fake.sends
        assert len(sends) == 2, f"expected the throttled send and one more, got {len(sends)}"
        gap = sends[1].at - sends[0].at
        assert gap >= 0.9, (
            f"the provider said Retry-After: 1 and was asked again {gap:.2f} s later: return"
            " DeliveryResult.failed(reason, retryable=True, retry_after=retry_after_seconds(resp.headers.get("
            "'Retry-After'))) (connectors.sdk.retry_after)"
        )

    # -- always ---------------------------------------------------------------------------

    def _loop_not_blocked(self, harness: Harness) -> None:
        assert (why := harness.loop.report()) is None, why

    def _nothing_private_logged(self, harness: Harness, private: Mapping[str, Any]) -> None:
        found = leaks(harness.logs, {what: str(value) for what, value in private.items() if value})
        assert not found, (
            "log lines hold a customer's message or address (the log is kept longer than messages and"
            " read by more people; log ids, counts and lengths instead):\n" + "\n".join(found[:5])
        )
