"""A stream made by someone else with limits of its own is brought in line at set-up.

Found by an audit: an ``RD_EVENTS`` made beforehand with room for ten messages (and ``discard
new``) was kept as it was; after ten events every append failed, customers' mail was accepted
and then parked, and the services said ready."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from events import subjects
from events.streams import ATTACHMENTS_BUCKET, StreamSettings, ensure_streams, stream_drift
from services.bootstrap import connect, stream_settings
from services.bus.embedded import EmbeddedNats
from services.config import Config
from services.config import load as load_config
from services.runners import run_connector
from tests.integration.system import eventually

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
    # was older at once) when any service started. Only `relaydesk setup` (shrink) deletes;
    # a lower limit that deletes nothing (a review) is applied at any start.
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, StreamSettings())
        await js.publish("rd.inbound.sms", b"{}")
        fresh_only = StreamSettings(inbound_max_age=7 * 86400.0)
        applied = [d for d in await ensure_streams(js, fresh_only) if d.stream == subjects.INBOUND_STREAM]
        assert [(d.field, d.status) for d in applied] == [("max_age", "updated")]  # its one message is new

        tight = StreamSettings(inbound_max_age=2.0, inbound_dedupe_window=1.0)

        async def older_than_the_limit() -> bool:
            oldest = await js.get_msg(subjects.INBOUND_STREAM, 1)
            return oldest.time is not None and (datetime.now(UTC) - oldest.time).total_seconds() > 2.5

        await eventually(older_than_the_limit)
        kept = [d for d in await ensure_streams(js, tight) if d.stream == subjects.INBOUND_STREAM]
        assert ("max_age", "kept") in [(d.field, d.status) for d in kept]
        assert (await js.stream_info(subjects.INBOUND_STREAM)).state.messages == 1
        await ensure_streams(js, tight, shrink=True)  # relaydesk setup
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 2.0
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
        await ensure_streams(js, stream_settings(shorter))  # nothing is older: any start applies it
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 30 * 86400.0
    finally:
        await nc.close()


async def test_raw_messages_are_not_kept_past_message_retention(clean_nats: EmbeddedNats) -> None:
    """A raw provider message holds the customer's text in clear: with ``message_days = 7`` and
    the default 14 raw days, each text stayed in RD_INBOUND a week after it read ``[expired]``."""
    config = load_config(None, {"RELAYDESK_RETENTION_MESSAGE_DAYS": "7"})
    assert config.retention.raw_message_days == 14
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, stream_settings(config))
        assert (await js.stream_info(subjects.INBOUND_STREAM)).config.max_age == 7 * 86400.0
    finally:
        await nc.close()
    # Never under the 3 days the dedupe window needs; and a shorter raw retention stays shorter.
    one_day = load_config(None, {"RELAYDESK_RETENTION_MESSAGE_DAYS": "1"})
    assert stream_settings(one_day).inbound_max_age == 3 * 86400.0
    both = {"RELAYDESK_RETENTION_MESSAGE_DAYS": "30", "RELAYDESK_RETENTION_RAW_MESSAGE_DAYS": "5"}
    assert stream_settings(load_config(None, both)).inbound_max_age == 5 * 86400.0
    assert stream_settings(load_config(None, {})).inbound_max_age == 14 * 86400.0  # retention off


async def test_the_web_chat_history_keeps_no_text_past_message_retention(clean_nats: EmbeddedNats) -> None:
    """Found by a retention audit: the chat's catch-up history (``RD_CHAT``) kept every chat
    message 30 days whatever ``[retention] message_days`` said; `relaydesk` now hands the
    setting to every connector, and the chat keeps its history no longer."""
    config = Config()
    config.retention = msgspec.structs.replace(config.retention, message_days=7)
    config.connectors = {"chat": {"port": 0, "widget_key": "wk-test", "session_secret": "s" * 32}}
    stop = asyncio.Event()
    started: list[str] = []
    async with connect(config, clean_nats.url, name="test-chat") as bus:
        task = asyncio.create_task(run_connector(config, bus, "chat", stop, started))
        try:

            async def listening() -> bool:
                assert not task.done(), task
                return bool(started)

            await eventually(listening)
            info = await bus.nc.jetstream().stream_info("RD_CHAT")
            assert info.config.max_age == 7 * 24 * 3600
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


async def test_files_of_messages_are_kept_no_longer_than_their_text(clean_nats: EmbeddedNats) -> None:
    """Found by a retention audit: mail attachments and agents' files (``rd_attachments``) were
    kept for ever, though the text of the messages they came with read ``[expired]`` after
    ``message_days``. A start brings the store an older version made in line; a file from
    before the change stays until it is as old as the limit."""
    config = Config()
    config.retention = msgspec.structs.replace(config.retention, message_days=7)
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        made_before = await js.create_object_store(ATTACHMENTS_BUCKET)  # as an older version made it
        await made_before.put("invoice.pdf", b"%PDF-1.7 ...")
        await ensure_streams(js, stream_settings(config))
        info = await js.stream_info(f"OBJ_{ATTACHMENTS_BUCKET}")
        assert info.config.max_age == 8 * 24 * 3600  # its UTC day and 7 more, as the text
        assert (await made_before.get("invoice.pdf")).data == b"%PDF-1.7 ..."
    finally:
        await nc.close()
