"""A shared NATS where a neighbour's stream already captures Relaydesk's subjects: NATS refuses
Relaydesk's stream without saying whose subjects it overlaps (error 10065); set-up fails at once
naming the neighbour's stream and the subjects it takes, so the operator knows what to move."""

from __future__ import annotations

import nats
import pytest

from events.streams import SetupFailed, ensure_streams
from services.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.integration


async def test_a_neighbours_stream_on_relaydesks_subjects_is_named_in_the_refusal(clean_nats: EmbeddedNats) -> None:
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="NEIGHBOUR", subjects=["orders.>", "rd.*.sms"])
        await js.add_stream(name="BYSTANDER", subjects=["billing.>"])
        with pytest.raises(SetupFailed) as refused:
            await ensure_streams(js)
        said = str(refused.value)
        assert "subjects overlap" in said
        assert "NEIGHBOUR takes rd.*.sms" in said
        assert "BYSTANDER" not in said and "orders.>" not in said
        # Nothing of the neighbour's was touched.
        assert (await js.stream_info("NEIGHBOUR")).config.subjects == ["orders.>", "rd.*.sms"]
    finally:
        await nc.close()


async def test_a_neighbours_stream_on_a_bucket_subject_is_named_too(clean_nats: EmbeddedNats) -> None:
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="SNOOP", subjects=["$KV.rd_identity.>"])
        with pytest.raises(SetupFailed) as refused:
            await ensure_streams(js)
        assert "SNOOP takes $KV.rd_identity.>" in str(refused.value)
    finally:
        await nc.close()
