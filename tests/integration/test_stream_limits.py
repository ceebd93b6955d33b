"""A stream made by someone else with limits of its own is brought in line at set-up.

Found by an audit: an ``RD_EVENTS`` made beforehand with room for ten messages (and ``discard
new``) was kept as it was; after ten events every append failed, customers' mail was accepted
and then parked, and the services said ready."""

from __future__ import annotations

import dataclasses

import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from events import subjects
from events.streams import StreamSettings, ensure_streams, stream_drift
from services.bootstrap import stream_settings
from services.config import load as load_config
from services.embedded_nats import EmbeddedNats

pytestmark = pytest.mark.integration


async def test_a_stream_with_limits_of_its_own_is_set_to_ours(clean_nats: EmbeddedNats) -> None:
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=subjects.EVENTS_STREAM,
                subjects=[subjects.EVENTS_ALL],
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                max_msgs=10,
                max_bytes=100_000,
                max_msg_size=512,
            )
        )
        found = {d.field: (d.old, d.new) for d in await stream_drift(js, StreamSettings()) if d.stream == "RD_EVENTS"}
        assert found["max_msgs"] == (10, -1)
        assert found["max_bytes"] == (100_000, -1)
        assert found["max_msg_size"] == (512, -1)
        await ensure_streams(js, StreamSettings())
        info = await js.stream_info(subjects.EVENTS_STREAM)
        assert (info.config.max_msgs, info.config.max_bytes, info.config.max_msg_size) == (-1, -1, -1)
        assert await stream_drift(js, StreamSettings()) == []
        for i in range(20):  # more than it had room for
            await js.publish(f"rd.evt.c.cu{i}.cv{i}", b"{}")
    finally:
        await nc.close()


async def test_a_service_start_never_lowers_a_limit_so_far_that_stored_messages_go(clean_nats: EmbeddedNats) -> None:
    # An operator audit: RD_INBOUND kept for 30 days by hand went back to 14 (deleting what
    # was older at once) when any service started. Only `relaydesk setup` (shrink) lowers it.
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, StreamSettings())
        info = await js.stream_info(subjects.INBOUND_STREAM)
        await js.update_stream(dataclasses.replace(info.config, max_age=30 * 86400.0))
        await js.publish("rd.inbound.sms", b"{}")
        kept = [d for d in await ensure_streams(js, StreamSettings()) if d.stream == subjects.INBOUND_STREAM]
        assert [(d.field, d.status) for d in kept] == [("max_age", "kept")]
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 30 * 86400.0
        await ensure_streams(js, StreamSettings(), shrink=True)  # relaydesk setup
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == StreamSettings().inbound_max_age
    finally:
        await nc.close()


async def test_raw_message_retention_is_a_setting_setup_applies(clean_nats: EmbeddedNats) -> None:
    # The audit's operator wanted 90 days of raw messages for an audit trail; it was hard-coded.
    config = load_config(None, {"RELAYDESK_RETENTION_RAW_MESSAGE_DAYS": "90"})
    assert stream_settings(config).inbound_max_age == 90 * 86400.0
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, stream_settings(config))
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 90 * 86400.0
        shorter = load_config(None, {"RELAYDESK_RETENTION_RAW_MESSAGE_DAYS": "30"})
        await ensure_streams(js, stream_settings(shorter))  # a service start: kept
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 90 * 86400.0
        await ensure_streams(js, stream_settings(shorter), shrink=True)  # relaydesk setup
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 30 * 86400.0
    finally:
        await nc.close()
