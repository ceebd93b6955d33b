"""The API's view never diverges from the log and starts from a snapshot: a reader forced
into slow-consumer drops reads again what it lost; a restart reads only the log after the
snapshot; the API listens before its view has caught up and answers 503 until it has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import (
    ConversationOpened,
    ConversationResolved,
    ConversationTransferred,
    LogEvent,
    MessageReceived,
    MessageSent,
    ReplyRequested,
)
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from services.api import view_snapshot, workspace
from services.api.logreader import LogReader
from services.api.readmodel import LiveState
from services.api.replies import PendingReplies
from services.bootstrap import Bus
from services.bus.embedded import EmbeddedNats
from services.health import Health
from services.runners import ServiceFailed, run_api
from tests.integration.system import API_TOKEN, eventually, system_config

from .view_log import T0, agents, fold_of_log, picture, write, write_conversations

pytestmark = pytest.mark.integration


@asynccontextmanager
async def connected(server: EmbeddedNats) -> AsyncIterator[tuple[NATS, EventStore]]:
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        yield nc, EventStore(nc, js)
    finally:
        await nc.drain()


class Counting:
    """A fold with a snapshot of its own: how many events it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def apply(self, stored: StoredEvent) -> None:
        self.seen += 1

    def dump(self) -> bytes:
        return msgspec.msgpack.encode(self.seen)

    def load(self, data: bytes) -> None:
        self.seen = msgspec.msgpack.decode(data, type=int)


async def test_a_reader_that_drops_messages_reads_them_again_and_the_view_equals_the_log(
    clean_nats: EmbeddedNats,
) -> None:
    async with connected(clean_nats) as (_, store):
        await write(store, agents(20))
        await write_conversations(store, "a", 300, 20)
        # A client buffer of 32 messages against batches of 256: nats-py drops much of every
        # batch ("slow consumer"), and a slow fold keeps the reader behind a burst as well.
        reader = LogReader(store.for_reader("api"), batch=256, pending_msgs_limit=32, wait=0.1)
        live = LiveState(store, use_snapshot=False, reader=reader)
        live.add_fold(lambda stored: time.sleep(0.0001) if stored.seq % 7 == 0 else None)
        await live.begin()
        try:
            burst = asyncio.create_task(write_conversations(store, "b", 300, 20))
            end = await burst
            assert await live.wait_for(end, timeout=60), (live.progress(), end)
            assert live.caught_up.is_set()
            assert reader.rereads > 0, "the test did not force any lost message"
            assert picture(live.state) == picture(await fold_of_log(store))
            assert live.position == end
        finally:
            await live.stop()


async def test_a_restart_reads_only_the_log_after_the_snapshot(clean_nats: EmbeddedNats) -> None:
    async with connected(clean_nats) as (_, store):
        await write(store, agents(50))
        first_end = await write_conversations(store, "a", 5_000, 50)
        assert first_end >= 20_000
        saved, fed = Counting(), Counting()
        first = LiveState(store)
        first.add_fold(saved.apply, name="saved", saved=saved)
        first.add_fold(fed.apply, name="fed", refeed_from=lambda: first_end - 99)  # the last 100 again
        await first.start()
        await first.save_snapshot()
        await first.stop()
        end = await write_conversations(store, "b", 100, 50)
        tail = end - first_end

        saved2, fed2 = Counting(), Counting()
        second = LiveState(store)
        second.add_fold(saved2.apply, name="saved", saved=saved2)
        second.add_fold(fed2.apply, name="fed", refeed_from=lambda: 1)
        await second.start()
        try:
            assert second.snapshot_position == first_end
            assert second.reader.read == tail  # the log after the snapshot, not all of it
            assert saved2.seen == end  # restored from the snapshot, then the tail
            assert fed2.seen == 100 + tail  # fed again from where the snapshot said
            assert picture(second.state) == picture(await fold_of_log(store))
        finally:
            await second.stop()


async def test_a_fold_added_by_an_upgrade_that_needs_no_past_reads_only_after_the_snapshot(
    clean_nats: EmbeddedNats,
) -> None:
    """The web chat's resolution notices (services.api.closings) came with a fold a snapshot of
    the release before never named: its first start read the whole log again for it, as slow as
    a cold start, for notices that only look ten minutes back."""
    async with connected(clean_nats) as (_, store):
        await write(store, agents(5))
        first_end = await write_conversations(store, "a", 1_000, 5)
        first = LiveState(store)
        await first.start()
        await first.save_snapshot()  # a release without the fold
        await first.stop()
        end = await write_conversations(store, "b", 10, 5)

        new, old = Counting(), Counting()
        second = LiveState(store)
        second.add_fold(new.apply, name="new", refeed_from=lambda: 1, needs_the_past=False)
        second.add_fold(old.apply, name="old", refeed_from=lambda: 1)
        await second.start()
        try:
            assert second.snapshot_position == first_end
            assert new.seen == end - first_end  # the log after the snapshot only
            assert old.seen == end  # a fold that needs the past still reads it all again
        finally:
            await second.stop()


async def test_after_a_snapshot_a_conversation_open_for_months_costs_its_own_events_not_the_log_since(
    clean_nats: EmbeddedNats,
) -> None:
    """Found by the long-run audit: the workspace and the replies waiting (personal data, not in
    the snapshot) were fed the whole log again from the oldest open conversation, so one left
    open for months made every API restart about as slow as a cold one."""
    async with connected(clean_nats) as (_, store):
        old = [
            ConversationOpened(
                at=T0, customer_id="cu-old", conversation_id="cv-old", channel="sms", contact="+15550001234"
            ),
            MessageReceived(
                at=T0,
                customer_id="cu-old",
                conversation_id="cv-old",
                channel="sms",
                message_id="m-old",
                provider_message_id="p-old",
                text="the question I asked months ago",
            ),
            ReplyRequested(
                at=T0, customer_id="cu-old", conversation_id="cv-old", channel="sms", reply_id="r-old", text="on it"
            ),  # no outcome yet: still waiting
        ]
        await write(store, old)
        since: list[LogEvent] = []
        for i in range(2_000):  # every later conversation opened and resolved
            cid, cust = f"cv-{i}", f"cu-{i}"
            since.append(ConversationOpened(at=T0, customer_id=cust, conversation_id=cid, channel="sms", contact="+1"))
            since.append(ConversationResolved(at=T0, customer_id=cust, conversation_id=cid, agent_id="ag0"))
        end = await write(store, since)
        first = LiveState(store)
        workspace.of(first, store)
        pending = PendingReplies()
        first.add_fold(pending.apply, name="replies_pending", refeed_subjects=pending.refeed_subjects)
        await first.start()
        await first.save_snapshot()
        await first.stop()

        second = LiveState(store)
        facts = workspace.of(second, store)
        pending = PendingReplies()
        second.add_fold(pending.apply, name="replies_pending", refeed_subjects=pending.refeed_subjects)
        await second.start()
        try:
            assert second.snapshot_position == end
            # Only the open conversation's own events are read again (once for each fold).
            assert second.fed_again == 3 + 1, second.fed_again
            assert list(pending.by_id) == ["r-old"]
            item = facts.item_json(second.state, "cv-old", "cu-old")
            assert item["preview"] == "the question I asked months ago"
            assert item["customer"]["address"] == "+1 •••• 1234"
            assert set(facts.conversations) == {"cv-old"}
        finally:
            await second.stop()


async def test_a_damaged_snapshot_is_ignored_and_the_whole_log_folded(clean_nats: EmbeddedNats) -> None:
    async with connected(clean_nats) as (nc, store):
        end = await write_conversations(store, "a", 50, 5)
        obs = await nc.jetstream().object_store(subjects.SNAPSHOT_BUCKET)
        await obs.put(view_snapshot.SNAPSHOT_NAME, b"\x00 not a snapshot")
        live = LiveState(store)
        await live.start()
        try:
            assert live.snapshot_position is None and live.reader.read == end
            assert picture(live.state) == picture(await fold_of_log(store))
        finally:
            await live.stop()


class Gate:
    """Holds the API's log reader before its first fetch until the test opens it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = asyncio.Event()
        self.holding = asyncio.Event()  # set while the reader waits at the closed gate
        real = LogReader._fetch

        async def held(reader: LogReader, last: int) -> Any:
            if not self.open.is_set():
                self.holding.set()
                await self.open.wait()
                self.holding.clear()
            return await real(reader, last)

        monkeypatch.setattr(LogReader, "_fetch", held)


async def test_the_api_listens_at_once_and_answers_503_until_its_view_has_caught_up(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    base = f"http://{config.api.host}:{config.api.port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    gate = Gate(monkeypatch)
    async with connected(clean_nats) as (nc, store), aiohttp.ClientSession() as http:
        await write(store, agents(3))
        end = await write_conversations(store, "a", 30, 3)
        stop, ready = asyncio.Event(), asyncio.Event()
        api = asyncio.create_task(run_api(config, Bus(nc, store), API_TOKEN, stop, ready))
        try:

            async def answered() -> tuple[int, Any] | None:
                try:
                    async with http.get(base + "/readyz") as r:
                        return r.status, await r.json()
                except aiohttp.ClientConnectionError:
                    return None

            status, body = await eventually(answered)
            assert status == 503 and body["view"]["caught_up"] is False
            assert body["view"]["position"] == 0 and body["view"]["log_end"] == end
            async with http.get(base + "/v1/conversations", headers=auth) as r:
                assert r.status == 503 and r.headers["Retry-After"]
                assert "not caught up" in (await r.json())["error"]
            assert not ready.is_set()

            gate.open.set()
            await asyncio.wait_for(ready.wait(), 30)
            async with http.get(base + "/readyz") as r:
                assert r.status == 200 and (await r.json())["view"]["position"] == end
            async with http.get(base + "/v1/conversations", headers=auth, params={"limit": "1000"}) as r:
                assert r.status == 200
                served = await r.json()
            expected = picture(await fold_of_log(store))["conversations"]
            rows = served["conversations"] if isinstance(served, dict) else served
            assert {c["id"]: (c["status"], c["agent_id"]) for c in rows} == expected
        finally:
            stop.set()
            await api


async def test_a_port_clash_is_reported_before_the_log_is_read(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    gate = Gate(monkeypatch)  # never opened: reading the log would hang the test
    holder = await asyncio.start_server(lambda r, w: None, config.api.host, config.api.port)
    try:
        async with connected(clean_nats) as (nc, store):
            await write(store, agents(2))
            with pytest.raises(ServiceFailed, match="cannot listen"):
                await asyncio.wait_for(run_api(config, Bus(nc, store), API_TOKEN, asyncio.Event()), 20)
            assert not gate.open.is_set()
    finally:
        holder.close()
        await holder.wait_closed()


async def test_a_view_that_stops_following_the_log_is_not_ready_and_unprojected_resolutions_are_503(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the long-run audit: once caught up, the API stayed ready whatever its view
    missed later, and a conversation resolved while the projector lagged was a 404."""
    config = system_config(tmp_path, clean_nats.url)
    config.api = msgspec.structs.replace(config.api, view_stale_seconds=1.0)
    base = f"http://{config.api.host}:{config.api.port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    gate = Gate(monkeypatch)
    gate.open.set()
    async with connected(clean_nats) as (nc, store), aiohttp.ClientSession() as http:
        await write(store, agents(3))
        end = await write_conversations(store, "a", 30, 3)  # cv-a-0 is resolved
        stop, ready = asyncio.Event(), asyncio.Event()
        health = Health()  # the health port's checks: what Kubernetes probes
        api = asyncio.create_task(run_api(config, Bus(nc, store), API_TOKEN, stop, ready, health=health))
        try:
            await asyncio.wait_for(ready.wait(), 30)

            async def probe() -> tuple[int, Any]:
                async with http.get(base + "/readyz") as r:
                    return r.status, await r.json()

            async def readyz() -> tuple[int, Any]:
                # The health port says the same (found by an audit: it said ready for 19 minutes
                # while this /readyz said the view was 1.3 million events behind). Compared
                # while the answer holds still: the view falls behind, or catches up, between
                # two probes on a loaded machine (a CI failure).
                for _ in range(5):
                    status, body = await probe()
                    port_ready, checks = await health.run()
                    if (await probe())[0] == status:
                        assert port_ready == (status == 200), (checks, body)
                        return status, body
                return status, body

            status, body = await readyz()
            assert status == 200, body
            # No projector runs here: the timelines hold nothing of the log yet.
            assert body["projection"]["lag_events"] == end, body
            async with http.get(base + "/v1/conversations/cv-a-0", headers=auth) as r:
                assert r.status == 503 and r.headers["Retry-After"], await r.text()
                assert "has not recorded it yet" in (await r.json())["error"]
            async with http.get(base + "/v1/conversations/cv-never", headers=auth) as r:
                assert r.status == 404

            gate.open.clear()  # the view's reader stops (a wedged subscription, a paused loop)
            written = [end]

            async def behind() -> dict[str, Any] | None:
                # The log goes on (the fetch in flight when the gate closed still returns one).
                written.append(await write_conversations(store, "b", 1, 3, start=len(written)))
                status, body = await readyz()
                return body if status == 503 else None

            body = await eventually(behind, timeout=30)
            assert "fallen behind the log" in body["reason"], body
            assert body["view"]["lag_events"] > 0 and body["view"]["caught_up"] is True

            # A command meanwhile is recorded, and says so: not a 500 after the write (found by
            # a burst audit), and its Idempotency-Key replays that answer rather than doing it again.
            issue = {**auth, "Idempotency-Key": "token-while-behind"}
            for attempt in ("first", "retry"):
                async with http.post(base + "/v1/agents/ag0/tokens", json={"label": "x"}, headers=issue) as r:
                    answer = await r.json()
                    assert r.status == 503 and "recorded as event" in answer["error"], (attempt, answer)
                    replayed = r.headers.get("Idempotent-Replayed") == "true"
                    assert replayed == (attempt == "retry"), attempt
                    if not replayed:
                        assert r.headers["X-Relaydesk-Recorded-Seq"] == str(answer["recorded_seq"])

            gate.open.set()

            async def one_token() -> bool:
                async with http.get(base + "/v1/agents/ag0/tokens", headers=auth) as r:
                    return r.status == 200 and len((await r.json())["tokens"]) == 1

            await eventually(one_token, timeout=30)

            async def ready_again() -> bool:
                status, body = await readyz()
                return status == 200 and body["view"]["position"] >= written[-1]  # the token's event after it

            await eventually(ready_again, timeout=30)
        finally:
            stop.set()
            await api


async def test_a_reply_or_resolve_is_no_conflict_with_what_replies_wrote_meanwhile_but_a_transfer_is(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a burst audit: agents' replies and resolves were 409 "changed meanwhile" because
    intake had recorded their previous reply as sent (5,794 of 7,255 replies under load)."""
    config = system_config(tmp_path, clean_nats.url)
    base = f"http://{config.api.host}:{config.api.port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    gate = Gate(monkeypatch)
    gate.open.set()
    async with connected(clean_nats) as (nc, store), aiohttp.ClientSession() as http:
        await write(store, agents(3))
        await write_conversations(store, "r", 3, 3)  # cv-r-1: assigned to ag1
        stop, ready = asyncio.Event(), asyncio.Event()
        api = asyncio.create_task(run_api(config, Bus(nc, store), API_TOKEN, stop, ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)

            async def behind_by(event: LogEvent) -> None:
                """The view stands at the gate while ``event`` is written after what it saw:
                once the next command has read the conversation's last event to catch up
                (services/api/caught_up.py), so between that read and its decision."""
                gate.open.clear()
                await asyncio.wait_for(gate.holding.wait(), 30)
                read_last = EventStore.last_subject_seq

                async def then_written(reader: EventStore, subject: str) -> int:
                    last = await read_last(reader, subject)
                    # The conversation's own subject, or the filter of every customer's.
                    if subject in (subjects.conversation("cu-r-1", "cv-r-1"), subjects.conversation_filter("cv-r-1")):
                        monkeypatch.setattr(EventStore, "last_subject_seq", read_last)
                        await store.append(Append(event))
                    return last

                monkeypatch.setattr(EventStore, "last_subject_seq", then_written)

            async def post(action: str, body: dict[str, Any]) -> tuple[int, Any]:
                async with http.post(f"{base}/v1/conversations/cv-r-1/{action}", json=body, headers=auth) as r:
                    return r.status, await r.json()

            ids = {"customer_id": "cu-r-1", "conversation_id": "cv-r-1"}
            await behind_by(MessageSent(at=T0, channel="sms", reply_id="rp_earlier", **ids))
            replying = asyncio.create_task(post("reply", {"text": "On it"}))

            async def replied() -> bool:
                return any(isinstance(s.event, ReplyRequested) for s in await store.read("rd.evt.c.cu-r-1.cv-r-1"))

            await eventually(replied, timeout=30)  # appended while the view still stood before it
            gate.open.set()
            status, body = await replying
            assert status == 202, body

            transfer = ConversationTransferred(at=T0, from_agent="ag1", to_skill="billing", transfer_count=1, **ids)
            await behind_by(transfer)
            status, body = await post("resolve", {})
            assert (status, body["error"]) == (409, "the conversation changed meanwhile; fetch it and try again")
            gate.open.set()
        finally:
            gate.open.set()
            stop.set()
            await api
