"""The conformance kit: a pytest base class every sink must pass.

Subclass ``SinkConformance`` in a test module (the class name must start with ``Test``), set
``sink_class``, and give the kit your sink's config and a fake of your helpdesk
(``services.sinks.conformance.FakeHelpdesk``). Each test starts its own real nats-server,
the sink in a ``SinkRuntime`` on a free port, and the fake.

Contract checked:
  * an assignment creates exactly one ticket holding the customer's message; later messages
    become one comment each; replaying the log from the beginning (a lost position) and a
    restart create no second ticket and no second comment;
  * an agent's public reply in the helpdesk → one ``ReplyRequested`` (actor ``sink:<name>``)
    and one ``DeliverReply`` on the customer's own ``rd.out.<channel>``, however often the
    webhook comes;
  * a webhook with a bad signature or secret → 401/403, nothing appended;
  * no loops: a reply written in Relaydesk becomes one comment, and the helpdesk's webhook
    about that comment is not sent back to the customer; the sink's own reply is not posted
    back to the helpdesk;
  * solving the ticket resolves the conversation (once);
  * 429 with ``Retry-After``: waited out as long as it says, then the same call succeeds;
  * 401 from the helpdesk: the sink waits on that event (loudly, with a metric, ``/readyz``
    503, ``stalled_on`` in ``/healthz``), trying it again every ``auth_retry_pause`` seconds,
    not in a tight loop, and nothing is parked; once the credentials work every event flows in
    order (the ticket, then the later messages);
  * rotated credentials (``rotated_credentials``): while the sink waits on a 401 it reads its
    settings again before each retry; a re-read that fails changes nothing, and once the table
    holds the credentials the helpdesk now wants, every waiting event flows in order, without
    a restart.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
import pytest_asyncio

from connectors.sdk.conformance.helpers import conformance_nats
from events.model import DeliveryFailed
from services.bootstrap import event_store

from ..sdk import Sink, SinkRuntime
from .fake import FakeHelpdesk, FakeSettings
from .rig import Rig, eventually

# What the kit sets on every sink it runs: local, from the start of the log, quick retries.
KIT_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "start": "beginning",
    "api_backoff": 0.01,
    "api_attempts": 3,
    "retry_pause": 0.05,
    "lease_seconds": 2.0,
    "max_retry_after": 5.0,
    "auth_retry_pause": 1.0,
}


class SinkConformance(ABC):
    """Base class of a sink's conformance tests (see the module docstring)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    sink_class: ClassVar[type[Sink]]

    @abstractmethod
    def fake_helpdesk(self) -> FakeHelpdesk:
        """The fake of your helpdesk's API (not started)."""

    @abstractmethod
    def config(self, api_url: str) -> dict[str, Any]:
        """The raw ``[sinks.<name>]`` table pointing the sink at ``api_url``, with agent
        ``ava`` mapped to a helpdesk user. The kit sets host, port and timings."""

    def rotated_credentials(self, table: dict[str, Any]) -> dict[str, Any] | None:
        """``table`` with other API credentials (a rotated token), for the rotation check;
        None skips it."""
        return None

    def make_sink(self, api_url: str) -> Sink:
        return self.sink_class.from_config({**self.config(api_url), **KIT_SETTINGS})

    @pytest_asyncio.fixture
    async def rig(self, tmp_path: Path) -> AsyncIterator[Rig]:
        fake = self.fake_helpdesk()
        runtime: SinkRuntime | None = None
        rig: Rig | None = None
        async with conformance_nats(tmp_path) as (_, nc):
            try:
                url = await fake.start()
                store = event_store(nc)
                settings = FakeSettings({**self.config(url), **KIT_SETTINGS})
                runtime = SinkRuntime(self.make_sink(url), nc, store, settings=settings)
                await runtime.start()
                rig = Rig(nc, store, fake, runtime, lambda: self.make_sink(url), settings)
                yield rig
            finally:
                if rig is not None:
                    await rig.runtime.stop()
                elif runtime is not None:
                    await runtime.stop()
                await fake.stop()

    # -- Relaydesk → helpdesk ------------------------------------------------------------------

    async def test_assignment_creates_one_ticket_and_replay_duplicates_nothing(self, rig: Rig) -> None:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        await rig.caught_up(customer)
        assert [c.body for c in ticket.comments] == ["My invoice is wrong"]
        assert ticket.assignee, "the agent's helpdesk user is the assignee"

        await rig.restart(replay=True)
        await rig.message(customer, conversation, "Any news?")
        await rig.fake.wait_for(lambda: len(ticket.comments) == 2)
        await rig.caught_up(customer)
        await rig.restart()
        await rig.caught_up(customer)
        assert len(rig.fake.tickets_of(conversation)) == 1
        assert [c.body for c in ticket.comments] == ["My invoice is wrong", "Any news?"]

    # -- helpdesk → Relaydesk -----------------------------------------------------------------

    async def test_an_agent_reply_in_the_helpdesk_reaches_the_customer_once(self, rig: Rig) -> None:
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        call = rig.fake.agent_reply(ticket, "We refunded you.")
        for _ in range(2):  # the helpdesk retries a webhook
            status, body = await rig.post(call)
            assert status == 200, body
        [reply] = await rig.replies(customer)
        assert reply.text == "We refunded you." and reply.actor == f"sink:{rig.sink.name}"
        out = await eventually(rig.outbound)
        assert [(o.reply_id, o.text, o.contact, o.channel) for o in out] == [
            (reply.reply_id, "We refunded you.", rig.contact, rig.channel)
        ]
        await rig.caught_up(customer)
        assert [c.body for c in ticket.comments].count("We refunded you.") == 1, "the sink's own reply came back"

    async def test_an_agent_reply_in_the_helpdesk_waits_its_turn(self, rig: Rig) -> None:
        """A conversation's replies go out in the order they were written: one written in the
        helpdesk while an earlier reply has no outcome yet is on the log but not queued (the
        API's reply relay queues it once the earlier one has an outcome). Found by a chaos
        audit: the sinks queued theirs at once, past the API's order check."""
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        await rig.agent_replies(customer, conversation, "Looking into it")  # no outcome yet
        status, body = await rig.post(rig.fake.agent_reply(ticket, "We refunded you."))
        assert status == 200, body
        assert [r.text for r in await rig.replies(customer)] == ["Looking into it", "We refunded you."]
        assert [o.text for o in await rig.outbound()] == []

    async def test_a_reply_that_did_not_reach_the_customer_is_an_internal_note(self, rig: Rig) -> None:
        """A reply the provider refused (too long for SMS, outside WhatsApp's window, a number
        that does not exist) is said on the ticket, to the agents only, with the reason (found by
        a docs audit: a reply written in the helpdesk failed on the log and nobody there knew)."""
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        reply_id = await rig.agent_replies(customer, conversation, "Your refund is on its way")
        await rig.fake.wait_for(lambda: any(c.body == "Your refund is on its way" for c in ticket.comments))
        failed = DeliveryFailed(
            at=datetime.now(UTC),
            customer_id=customer,
            conversation_id=conversation,
            channel=rig.channel,
            reply_id=reply_id,
            reason="provider refused: the message is longer than 1600 characters",
        )
        await rig.append(failed)
        await rig.caught_up(customer)
        await rig.restart(replay=True)  # a sink reading the log again posts no second note
        await rig.caught_up(customer)
        notes = [c for c in ticket.comments if "could not be delivered" in c.body]
        assert len(notes) == 1 and not notes[0].public, [(c.body, c.public) for c in ticket.comments]
        assert "longer than 1600 characters" in notes[0].body

    async def test_a_forged_webhook_is_refused_and_does_nothing(self, rig: Rig) -> None:
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        status, body = await rig.post(rig.fake.forge(rig.fake.agent_reply(ticket, "Send me your password")))
        assert status in (401, 403) and "error" in body
        status, _ = await rig.post(rig.fake.forge(rig.fake.solve(ticket)))
        assert status in (401, 403)
        assert await rig.replies(customer) == [] and await rig.resolutions(customer) == []

    async def test_nothing_loops(self, rig: Rig) -> None:
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        await rig.agent_replies(customer, conversation, "Hello from Relaydesk")
        await rig.fake.wait_for(lambda: any(c.body == "Hello from Relaydesk" for c in ticket.comments))
        posted = next(c for c in ticket.comments if c.body == "Hello from Relaydesk")
        status, body = await rig.post(rig.fake.echo(ticket, posted))
        assert status == 200, body
        first = ticket.comments[0]
        status, body = await rig.post(rig.fake.echo(ticket, first))  # the customer's own message
        assert status == 200, body
        replies = await rig.replies(customer)
        assert [r.text for r in replies] == ["Hello from Relaydesk"], "an echo went back to the customer"

    async def test_solving_the_ticket_resolves_the_conversation_once(self, rig: Rig) -> None:
        customer, conversation = await rig.open_assigned()
        ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        call = rig.fake.solve(ticket)
        for _ in range(2):
            status, body = await rig.post(call)
            assert status == 200, body
        [resolved] = await rig.resolutions(customer)
        assert resolved.actor == f"sink:{rig.sink.name}"

    # -- the helpdesk's bad days ----------------------------------------------------------------

    async def test_a_429_is_waited_out_as_retry_after_says(self, rig: Rig) -> None:
        rig.fake.rate_limit_next(1, retry_after="1")
        customer, conversation = await rig.open_assigned()
        await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
        limited = [i for i, s in enumerate(rig.fake.seen) if s.status == 429]
        assert len(limited) == 1
        after = rig.fake.seen[limited[0] + 1]
        assert after.at - rig.fake.seen[limited[0]].at >= 0.95, "Retry-After: 1 was not honoured"
        await rig.caught_up(customer)
        assert len(rig.fake.tickets_of(conversation)) == 1

    async def test_refused_credentials_stall_the_sink_loudly_until_they_work(self, rig: Rig) -> None:
        rig.fake.refuse_auth = True
        customer, conversation = await rig.open_assigned()
        await rig.message(customer, conversation, "hello?")
        await eventually(lambda: _async(rig.runtime.stalled_on))
        async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/healthz") as resp:
            health = await resp.json()
        assert health["auth_failed"] is True and health["parked"] == 0 and health["stalled_on"]
        assert "401" in health["last_error"]
        async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/readyz") as resp:
            assert resp.status == 503
        # not retried in a tight loop: about one try per auth_retry_pause (1 s)
        calls = len(rig.fake.seen)
        await asyncio.sleep(1.5)
        assert len(rig.fake.seen) <= calls + 3
        assert await rig.sink.state.parked() == []

        rig.fake.refuse_auth = False  # the operator fixed the token: everything flows, in order
        await rig.caught_up(customer)
        ticket = rig.fake.ticket_of(conversation)
        assert ticket is not None
        assert [c.body for c in ticket.comments][-1] == "hello?"
        assert rig.runtime.stalled_on is None and rig.runtime.auth_failed is False
        async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/readyz") as resp:
            assert resp.status == 200

    async def test_a_webhook_met_with_refused_credentials_says_so_until_one_works(self, rig: Rig) -> None:
        """Found by an audit: the webhook answered 503 and nothing else said why; readiness
        stayed green until a log event stalled the sink."""
        ticket = await _a_webhook_refused_for_credentials(rig)
        async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/readyz") as resp:
            ready = await resp.json()
            assert resp.status == 503 and ready["auth_failed"] is True, ready
        assert "credentials" in ready["problem"] and rig.runtime.stalled_on is None

        rig.fake.refuse_auth = False  # the operator fixed the token; the helpdesk retries
        status, body = await rig.post(rig.fake.solve(ticket))
        assert status == 200, body
        async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/readyz") as resp:
            assert resp.status == 200, await resp.json()

    async def test_a_webhook_auth_failure_does_not_keep_the_sink_unready_for_good(self, rig: Rig) -> None:
        """Readiness 503 takes the sink out of its load balancer, so the helpdesk's retry that
        would clear it cannot arrive: the webhook's refusal lapses after ``auth_retry_pause``
        (found by a security audit: fixed credentials left the sink unready for good)."""
        await _a_webhook_refused_for_credentials(rig)
        rig.fake.refuse_auth = False  # the operator fixed the token; no webhook reaches the sink

        async def ready() -> bool:
            async with aiohttp.ClientSession() as http, http.get(rig.base_url + "/readyz") as resp:
                return resp.status == 200

        assert await eventually(ready, timeout=15)

    async def test_rotated_credentials_are_taken_while_waiting_without_a_restart(self, rig: Rig) -> None:
        settings = rig.settings
        assert isinstance(settings, FakeSettings)
        rotated = self.rotated_credentials(dict(settings.table))
        if rotated is None:
            pytest.skip("rotated_credentials() gives no rotated table for this sink")
        # The helpdesk now wants the new credentials: the sink's are refused.
        rig.fake.authorization = self.sink_class.from_config(rotated).make_api().authorization
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        await rig.message(customer, conversation, "hello?")
        await eventually(lambda: _async(rig.runtime.stalled_on))
        instance, api, before = rig.runtime.instance_id, rig.sink.api, rig.sink.settings

        settings.problem = "RELAYDESK_SINK_X_API_TOKEN_FILE: cannot read /run/secrets/x"  # a broken re-read
        reads = settings.reads
        await eventually(lambda: _async(settings.reads >= reads + 2), timeout=10)
        assert rig.sink.api is api and rig.sink.settings == before, "a failed re-read changed the settings"
        assert rig.runtime.auth_failed and rig.fake.ticket_of(conversation) is None

        settings.problem, settings.table = "", rotated  # the operator rotated the token
        await rig.caught_up(customer)
        ticket = rig.fake.ticket_of(conversation)
        assert ticket is not None and [c.body for c in ticket.comments] == ["My invoice is wrong", "hello?"]
        assert rig.runtime.instance_id == instance and rig.runtime.stalled_on is None
        assert not rig.runtime.auth_failed and await rig.sink.state.parked() == []


async def _async(value: Any) -> Any:
    return value


async def _a_webhook_refused_for_credentials(rig: Rig) -> Any:
    """A conversation's ticket, then the helpdesk refusing the sink's credentials while the sink
    answers that ticket's webhook (503); skips a sink whose webhook calls no helpdesk API."""
    customer, conversation = await rig.open_assigned()
    ticket = await eventually(lambda: _async(rig.fake.ticket_of(conversation)))
    await rig.caught_up(customer)
    rig.fake.refuse_auth = True
    status, body = await rig.post(rig.fake.solve(ticket))
    if status == 200:
        pytest.skip(f"{rig.sink.name}'s webhook did not call the helpdesk's API: no credentials to refuse")
    assert status == 503, body
    return ticket
