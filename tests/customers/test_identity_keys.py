"""``rd_identity`` keys are HMACs of identities (no address in clear on disk); lookups, links
and merges work on them; keys written by earlier versions (the address itself) move over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from events import subjects
from services.identity import HASHED_ONLY_KEY, HASHED_PREFIX, IdentityDirectory, hashed_key, kv_key, legacy_identity
from services.identity import compaction as identity_compaction
from services.identity.addresses import identity_for
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "identity",
    ["phone:+15551234567", "email:Ann.O+news@Example.com", "chat:user:ann-42", "social:PSID_1", "email:é@x.fr"],
)
def test_a_legacy_key_gives_back_its_identity(identity: str) -> None:
    assert legacy_identity(kv_key(identity)) == identity


def test_hashed_keys_and_markers_are_not_legacy_keys() -> None:
    assert legacy_identity(hashed_key(b"k" * 32, "phone:+15551234567")) is None
    assert legacy_identity("_merged.cu_1") is None
    assert hashed_key(b"a" * 32, "phone:+1") != hashed_key(b"b" * 32, "phone:+1")  # keyed


async def stream_subjects(nc: NATS, uid: str, bucket: str = subjects.IDENTITY_BUCKET) -> list[str]:
    info = await nc.jetstream().stream_info(f"KV_{bucket}", subjects_filter=">")
    keys = [s.removeprefix(f"$KV.{bucket}.") for s in (info.state.subjects or {})]
    return [k for k in keys if uid[:7] in k]


async def directory(nc: NATS) -> IdentityDirectory:
    return IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))


async def test_an_identity_is_stored_under_its_hmac_and_found_again(nc: NATS, uid: str) -> None:
    d = await directory(nc)
    identity = f"email:ann-{uid}@example.com"
    customer_id, created = await d.resolve(identity)
    assert created and (await d.resolve(identity)) == (customer_id, False)
    assert await d.lookup(identity) == customer_id
    key = await d.key(identity)
    assert key.startswith(HASHED_PREFIX) and uid not in key
    assert (await d.kv.get(key)).value == customer_id.encode()
    assert await stream_subjects(nc, uid) == []  # the address is in no subject
    # claim and link work on the same keys
    assert await d.claim(identity, "cu_someone_else") == customer_id
    await d.link(identity, "cu_survivor")
    assert await d.lookup(identity) == "cu_survivor"
    # another directory (another process) derives the same keys from the system key
    assert await (await directory(nc)).lookup(identity) == "cu_survivor"
    assert await d.forget(identity) and await d.lookup(identity) is None


async def test_a_legacy_key_moves_to_its_hmac_on_lookup_and_the_command_clears_the_rest(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    bucket = f"rd_identity_old_{uid}"
    kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    looked_up, untouched = f"phone:+1555{uid[:7]}", f"email:old-{uid}@example.com"
    for identity, owner in ((looked_up, "cu_old_1"), (untouched, "cu_old_2"), (f"chat:visitor-{uid}", "cu_old_3")):
        await kv.put(kv_key(identity), owner.encode())  # as an earlier Relaydesk wrote it
    assert len(await stream_subjects(nc, uid, bucket)) == 3  # their keys hold the addresses
    d = IdentityDirectory(kv, bucket=bucket)
    assert await d.lookup(looked_up) == "cu_old_1"
    assert await d.claim(untouched, "cu_new") == "cu_old_2"  # claim migrates before it creates
    assert await d.lookup(untouched) == "cu_old_2"
    assert len(await stream_subjects(nc, uid, bucket)) == 3  # moved, but their purge markers are left

    assert await d.migrate_all() == 1
    assert await d.lookup(f"chat:visitor-{uid}") == "cu_old_3"
    assert await stream_subjects(nc, uid, bucket) == []  # no legacy key nor its purge marker is left
    assert await d.migrate_all() == 0
    # From now on the bucket says it has no legacy key: a new directory skips looking for one.
    await kv.put(kv_key(f"email:late-{uid}@example.com"), b"cu_late")
    assert await IdentityDirectory(kv, bucket=bucket).lookup(f"email:late-{uid}@example.com") is None
    await js.delete_key_value(bucket)


def test_a_fresh_bucket_needs_no_legacy_lookups() -> None:
    assert legacy_identity(HASHED_ONLY_KEY) is None


async def test_compacting_rewrites_the_bucket_and_keeps_every_current_entry(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    bucket = f"rd_identity_{uid}"
    d = IdentityDirectory(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), bucket=bucket)
    kept, _ = await d.resolve(f"email:kept-{uid}@example.com")
    gone, _ = await d.resolve(f"email:gone-{uid}@example.com")
    await d.forget(f"email:gone-{uid}@example.com")
    await d.mark_merged(gone, kept)
    await d.kv.put(kv_key(f"email:legacy-{uid}@example.com"), b"cu_legacy")
    assert await d.migrate_all() == 1
    assert await d.compact() == 4  # with the "no legacy key" marker
    assert await d.lookup(f"email:kept-{uid}@example.com") == kept
    assert await d.lookup(f"email:legacy-{uid}@example.com") == "cu_legacy"
    assert await d.lookup(f"email:gone-{uid}@example.com") is None
    assert await d.merged_into(gone) == kept
    info = await js.stream_info(f"KV_{bucket}")
    assert info.state.messages == 5  # the four and the compaction's own mark: no purge marker, no removed value
    await js.delete_key_value(bucket)


class Cut(Exception):
    """Stands for the operator's Ctrl-C, a crash or NATS going away mid-compaction."""


@pytest.mark.parametrize("cut_at", ["copy", "refill"])
async def test_a_compaction_cut_short_loses_nothing_and_running_it_again_finishes(
    nc: NATS, uid: str, cut_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The audit's Ctrl-C between the bucket's delete and the end of its refill lost every
    # mapping (they were held only in the process), and the next message split a customer.
    js = nc.jetstream()
    bucket = f"rd_identity_cut_{cut_at}_{uid}"
    d = IdentityDirectory(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), bucket=bucket)
    owners = {
        f"phone:+1555{uid_digits(uid)}{n:03d}": (await d.resolve(f"phone:+1555{uid_digits(uid)}{n:03d}"))[0]
        for n in range(600)
    }
    real_put_all = identity_compaction._put_all
    calls = 0

    async def cut_short(kv: Any, entries: dict[str, bytes]) -> None:
        nonlocal calls
        calls += 1
        half = dict(list(entries.items())[: len(entries) // 2])
        if (cut_at == "copy" and calls == 1) or (cut_at == "refill" and calls == 2):
            await real_put_all(kv, half)
            raise Cut
        await real_put_all(kv, entries)

    monkeypatch.setattr(identity_compaction, "_put_all", cut_short)
    with pytest.raises(Cut):
        await d.compact()
    monkeypatch.setattr(identity_compaction, "_put_all", real_put_all)

    again = IdentityDirectory(await js.key_value(bucket), bucket=bucket)  # a new run of the command
    assert await again.compact() == len(owners) + 1  # with the "no legacy key" marker
    for identity, owner in owners.items():
        assert await again.lookup(identity) == owner
    with pytest.raises(BucketNotFoundError):
        await js.key_value(bucket + identity_compaction.COPY_SUFFIX)  # the copy is dropped once checked
    await js.delete_key_value(bucket)


async def test_a_copy_left_behind_by_a_finished_compaction_is_never_refilled_from(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: cut after the refill was checked but before the copy was dropped, the next
    # compaction (weeks later) refilled the bucket from that old copy, losing every mapping
    # made since and bringing back every identity forgotten since.
    js = nc.jetstream()
    bucket = f"rd_identity_left_{uid}"
    d = IdentityDirectory(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), bucket=bucket)
    old, _ = await d.resolve(f"phone:+1555{uid_digits(uid)}001")
    real_delete = js.delete_key_value

    async def cut_at_the_copy(name: str) -> bool:
        if name.endswith(identity_compaction.COPY_SUFFIX):
            raise Cut
        return await real_delete(name)

    monkeypatch.setattr(js, "delete_key_value", cut_at_the_copy)
    with pytest.raises(Cut):
        await d.compact()
    monkeypatch.setattr(js, "delete_key_value", real_delete)
    later = IdentityDirectory(await js.key_value(bucket), bucket=bucket)
    new, _ = await later.resolve(f"phone:+1555{uid_digits(uid)}002")  # made after the refill
    await later.forget(f"phone:+1555{uid_digits(uid)}001")  # an erasure after it
    await later.compact()
    assert await later.lookup(f"phone:+1555{uid_digits(uid)}002") == new
    assert await later.lookup(f"phone:+1555{uid_digits(uid)}001") is None, f"{old} came back"
    await js.delete_key_value(bucket)


async def test_a_compaction_cut_between_the_delete_and_the_create_is_finished_by_running_it_again(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = nc.jetstream()
    bucket = f"rd_identity_gap_{uid}"
    d = IdentityDirectory(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), bucket=bucket)
    owner, _ = await d.resolve(f"phone:+1555{uid_digits(uid)}003")
    real_create = js.create_key_value

    async def cut_before_the_create(config: KeyValueConfig) -> Any:
        if config.bucket == bucket:
            raise Cut
        return await real_create(config)

    monkeypatch.setattr(js, "create_key_value", cut_before_the_create)
    with pytest.raises(Cut):
        await d.compact()
    monkeypatch.setattr(js, "create_key_value", real_create)
    with pytest.raises(BucketNotFoundError):
        await js.key_value(bucket)  # the gap the command must get past
    kv = await identity_compaction.recreate_if_cut_short(js, bucket)  # what the command does first
    assert kv is not None
    again = IdentityDirectory(kv, bucket=bucket)
    await again.compact()
    assert await again.lookup(f"phone:+1555{uid_digits(uid)}003") == owner
    await js.delete_key_value(bucket)


def uid_digits(uid: str) -> str:
    return str(int(uid[:6], 16) % 10_000).zfill(4)


async def test_a_running_intake_is_seen_before_compacting(nc: NATS, uid: str) -> None:
    # The command refuses to rewrite the bucket while intake would look identities up in it.
    js = nc.jetstream()
    stream = f"RD_INBOUND_{uid}"
    await js.add_stream(name=stream, subjects=[f"cut.{uid}.>"])
    try:
        assert await identity_compaction.intake_reading(js, stream) == 0  # no intake ever ran
        await js.add_consumer(stream, durable_name="intake", ack_policy="explicit")
        sub = await js.pull_subscribe_bind("intake", stream)
        fetch = asyncio.create_task(sub.fetch(1, timeout=5))
        try:
            await eventually(lambda: identity_compaction.intake_reading(js, stream))
        finally:
            fetch.cancel()
            await sub.unsubscribe()  # or the connection's drain waits out the request
    finally:
        await js.delete_stream(stream)


class HeldMarkerRead(IdentityDirectory):
    """The first read of the marker answers, then waits: another lookup runs in between."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held, self.release = asyncio.Event(), asyncio.Event()

    async def _get(self, key: str) -> Any:
        found = await super()._get(key)
        if key == HASHED_ONLY_KEY and not self.held.is_set():
            self.held.set()
            await self.release.wait()
        return found


async def test_a_first_lookup_overtaken_by_another_does_not_conclude_the_bucket_holds_legacy_keys(
    nc: NATS, uid: str
) -> None:
    # "Legacy" costs every later new customer an extra KV read for the life of the process. One
    # lookup reads "no marker", another marks the fresh bucket and creates a customer, then the
    # first sees a non-empty bucket: it must not conclude the bucket holds legacy keys.
    js = nc.jetstream()
    bucket = f"rd_identity_race_{uid}"
    d = HeldMarkerRead(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), bucket=bucket)
    try:
        first = asyncio.create_task(d.lookup("phone:+15550000001"))
        await asyncio.wait_for(d.held.wait(), 10)
        second = asyncio.create_task(d.resolve("phone:+15550000002"))
        lock = getattr(d, "_legacy_check", None)  # one check at a time: the second waits for it

        async def overtaken_or_waiting() -> bool | None:
            return second.done() or (lock is not None and lock.locked()) or None

        await eventually(overtaken_or_waiting, timeout=10)
        d.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert d._legacy is False
        # A process starting on the now non-empty bucket reads the marker, not "legacy".
        other = IdentityDirectory(await js.key_value(bucket), bucket=bucket)
        assert await other.lookup("phone:+15559999999") is None and other._legacy is False
    finally:
        await js.delete_key_value(bucket)


class CountingReads(IdentityDirectory):
    """Counts the bucket reads its lookups make."""

    reads = 0

    async def _get(self, key: str) -> str | None:
        self.reads += 1
        return await super()._get(key)


async def test_a_new_customer_costs_one_create_and_a_known_one_is_found_by_a_process_that_never_met_it(
    nc: NATS, uid: str
) -> None:
    # A bucket of its own, as a deployment's starts: empty, so it holds no legacy key. The shared
    # rd_identity of the test session may not say so, depending on which test wrote to it first
    # (a merge's put before any lookup leaves it without the "hashed keys only" mark).
    js = nc.jetstream()
    bucket = f"rd_identity_create_first_{uid}"
    kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    try:
        first, second = CountingReads(kv, bucket=bucket), CountingReads(kv, bucket=bucket)
        await first.warm_up()
        await second.warm_up()
        ann, bob = f"email:ann-{uid}@example.com", f"phone:+1555{int(uid[:7], 16) % 10_000_000:07d}"

        before = first.reads
        ann_id, created = await first.resolve(ann)
        assert created and first.reads == before  # created without reading the bucket first
        # Another process has never met Ann: it must find her, not make a second customer.
        assert await second.resolve(ann) == (ann_id, False)
        assert await first.resolve(ann) == (ann_id, False)

        # Two processes meeting a new customer at once make one customer between them.
        results = await asyncio.gather(first.resolve(bob), second.resolve(bob))
        assert results[0][0] == results[1][0] and sorted(c for _, c in results) == [False, True]

        # An erased customer who writes again is a new customer, even for a process that met them.
        assert await first.forget(ann)
        again, created = await first.resolve(ann)
        assert created and again != ann_id
        assert await second.resolve(ann) == (again, False)
    finally:
        await js.delete_key_value(bucket)


async def test_a_bucket_that_may_hold_legacy_keys_is_read_before_a_create(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    bucket = f"rd_identity_legacy_first_{uid}"
    kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    try:
        identity = f"phone:+1666{int(uid[:7], 16) % 10_000_000:07d}"
        await kv.put(kv_key(identity), b"cu_from_before")  # as an earlier Relaydesk wrote it
        d = IdentityDirectory(kv, bucket=bucket)
        await d.warm_up()
        assert await d.resolve(identity) == ("cu_from_before", False)
    finally:
        await js.delete_key_value(bucket)


async def test_a_customer_an_earlier_version_filed_under_another_form_of_the_address_is_found(
    nc: NATS, uid: str
) -> None:
    # Before addresses were normalised to NFC and IDN domains to one form, josé typed in NFD
    # and ann@xn--bcher-kva.de were keys of their own: their customers must not be split now.
    d = await directory(nc)
    nfd, a_label = f"email:jose\u0301-{uid}@example.com", f"email:ann-{uid}@xn--bcher-kva.de"
    for earlier, owner in ((nfd, "cu_nfd_" + uid[:6]), (a_label, "cu_alabel_" + uid[:6])):
        await d.kv.put(await d.key(earlier), owner.encode())  # as the earlier version wrote it
    assert await d.resolve(identity_for("email", f"jos\u00e9-{uid}@example.com")) == ("cu_nfd_" + uid[:6], False)
    assert await d.lookup(identity_for("email", f"ann-{uid}@B\u00fccher.de")) == "cu_alabel_" + uid[:6]
    # moved to the identity's own key, so an erasure (forget) finds it
    for earlier in (nfd, a_label):
        with pytest.raises(KeyNotFoundError):
            await d.kv.get(await d.key(earlier))
    assert await d.forget(identity_for("email", f"jos\u00e9-{uid}@example.com"))
    assert await d.lookup(identity_for("email", f"jose\u0301-{uid}@example.com")) is None
