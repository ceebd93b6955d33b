"""A reply taken back while a connector holds it: an unlink (or an erasure) deletes its
``DeliverReply`` from ``RD_OUTBOUND`` while the SMS connector waits to try it again after a
provider's outage. Found reviewing the unlink: the connector kept the command it had fetched in
memory, opened, and sent it on its next try, to an address that was no longer the customer's.
Now the server's advisory of the deletion reaches every process of the channel, and no further
try goes out; the reply is reported failed, saying why."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from connectors.sdk.conformance import FakeProvider, read_outcomes, wait_for_outcome
from connectors.sdk.withdrawals import WITHDRAWN_REASON
from events import subjects
from tests.connectors.outbound_rig import a_reply, queue, sms_runtime, twilio_queued

pytestmark = pytest.mark.integration


async def test_a_reply_deleted_from_the_queue_while_it_waits_for_a_retry_is_not_sent(clean_nc: NATS) -> None:
    nc = clean_nc
    fake = FakeProvider(handler=twilio_queued, fail_next=1)  # Twilio down for the first try
    await fake.start()
    # 2-4 s before the second try: the unlink comes meanwhile.
    runtime = await sms_runtime(nc, fake, deliver_attempts=3, deliver_backoff=4.0)
    try:
        js = nc.jetstream()
        reply = a_reply("sms", "+15551230000")
        seq = await queue(nc, reply)
        await fake.wait_for(1, timeout=15)
        assert len(fake.sends) == 1  # the first try, refused
        # What the unlink does to the replies it takes back (services.customers.scan.erase_msg).
        assert await js.delete_msg(subjects.OUTBOUND_STREAM, seq)

        found = await wait_for_outcome(js, "sms", reply.reply_id, timeout=30)
        assert found.report.outcome == "failed"
        assert found.report.reason == WITHDRAWN_REASON
        # The outcome is reported once the tries are over: a second try would have come first.
        assert len(fake.sends) == 1, "the reply taken back was sent to the address after all"
        assert len(await read_outcomes(js, "sms", reply.reply_id)) == 1
    finally:
        await runtime.stop()
        await fake.stop()
