"""Rebuilding timelines from the log, over a nats-server of the test's own (so the whole log
is known) and both backends."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from events.model import (
    AgentStatusChanged,
    CustomerProfileUpdated,
    CustomersMerged,
    IdentityLinked,
    LogEvent,
)
from events.store import Append, EventStore
from services.bus.embedded import EmbeddedNats
from services.projector import Projector
from services.rebuild import NoCustomerEvents, rebuild_command, rebuild_timelines
from services.timelines import open_store
from tests.timelines.helpers import BACKENDS, T0, Backend, Script, make_backend, new_id

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
async def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backends(backend_name: str, tmp_path: Path) -> AsyncIterator[tuple[Backend, Backend]]:
    live = make_backend(backend_name, tmp_path / "live")
    other = make_backend(backend_name, tmp_path / "other")
    (tmp_path / "live").mkdir()
    (tmp_path / "other").mkdir()
    try:
        yield live, other
    finally:
        await live.close_all()
        await other.close_all()


def traffic(customers: int = 6) -> tuple[list[LogEvent], list[Script]]:
    """Several customers on several channels, interleaved, with agent events between, and the
    customer-level events among them (see ``customer_events``)."""
    scripts: list[Script] = []
    streams: list[list[LogEvent]] = []
    ids = [new_id("cu") for _ in range(customers)]
    for i, cust in enumerate(ids):
        for channel in ("sms", "email") if i % 2 else ("chat",):
            s = Script(cust, new_id("cv"), channel=channel)
            scripts.append(s)
            streams.append([s.created(), *s.full(agent="ava" if i % 3 else "bruno")])
    first_stream = {}
    for n, s in enumerate(scripts):
        first_stream.setdefault(s.customer, n)
    for cust, placed in customer_events(ids).items():
        stream = streams[first_stream[cust]]
        for position, event in sorted(placed, key=lambda p: -p[0]):
            stream.insert(position, event)
    out: list[LogEvent] = []
    while any(streams):
        for st in streams:
            if st:
                out.append(st.pop(0))
        out.append(AgentStatusChanged(at=T0, agent_id="ava", status="available"))
    return out, scripts


def customer_events(ids: Sequence[str]) -> dict[str, list[tuple[int, LogEvent]]]:
    """Per customer, (position in its first conversation's events, event): an identity link
    for each; two profile updates (the last one wins) for every third; merges of ``ids[1]``
    into ``ids[2]`` and then ``ids[2]`` into ``ids[3]`` (a merge of merges), written mid-way,
    so both customers' conversations go on before and after. ``ids[0]`` is never merged."""
    at = T0 + timedelta(hours=1)
    placed: dict[str, list[tuple[int, LogEvent]]] = {c: [] for c in ids}
    for i, cust in enumerate(ids):
        placed[cust].append(
            (3, IdentityLinked(at=at, customer_id=cust, identity=f"email:customer{i}@example.com", actor="operator"))
        )
        if i % 3 == 0:
            placed[cust] += [
                (
                    5,
                    CustomerProfileUpdated(
                        at=at, customer_id=cust, tier="gold", flags=("media_attention",), crm_id=f"CRM-{i}"
                    ),
                ),
                (
                    15,
                    CustomerProfileUpdated(
                        at=at + timedelta(minutes=1),
                        customer_id=cust,
                        tier="platinum",
                        flags=("regulatory_risk", "executive_escalation"),
                        preferred_language="es",
                        crm_id=f"CRM-{i}",
                        actor="operator",
                    ),
                ),
            ]
    if len(ids) >= 3:
        placed[ids[2]].append((9, CustomersMerged(at=at, customer_id=ids[2], merged_id=ids[1], actor="operator")))
    if len(ids) >= 4:
        placed[ids[3]].append((13, CustomersMerged(at=at, customer_id=ids[3], merged_id=ids[2], actor="operator")))
    return placed


def kinds(rows: dict[str, list[tuple[object, ...]]]) -> set[object]:
    """The timeline kinds in a ``dump()`` (its fifth column)."""
    return {r[4] for r in rows["timeline"]}


CUSTOMER_KINDS = {"customers_merged", "identity_linked", "profile_updated"}


async def append_all(store: EventStore, events: Sequence[LogEvent]) -> None:
    await store.append_many([Append(e) for e in events])


async def live_projection(store: EventStore, ts: object, events: list[LogEvent]) -> None:
    """Append while a projector follows, then let it drain and stop."""
    projector = Projector(store, ts, batch_size=17, idle=0.005)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    half = len(events) // 2
    await append_all(store, events[:half])
    await asyncio.sleep(0.05)
    await append_all(store, events[half:])
    end = await store.last_seq()

    async def drained() -> None:
        while await ts.checkpoint() < end - 1:  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(drained(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    await projector.catch_up()


async def test_rebuild_gives_byte_for_byte_the_live_rows(
    own_store: EventStore, backends: tuple[Backend, Backend]
) -> None:
    live_b, other_b = backends
    live = await live_b.open()
    events, scripts = traffic()
    await live_projection(own_store, live, events)
    result = await rebuild_timelines(own_store, other_b.target, schema=other_b.schema, progress=False)
    assert result.swapped and result.checkpoint == await live.checkpoint()
    rebuilt = await other_b.open()
    live_rows, rebuilt_rows = await live.dump(), await rebuilt.dump()
    assert len(live_rows["timeline"]) == len([e for e in events if not isinstance(e, AgentStatusChanged)])
    assert len(live_rows["conversations"]) == len(scripts)
    # customer-level events are in the comparison: links, profiles, merges (of merges)
    assert kinds(live_rows) >= CUSTOMER_KINDS
    assert len(live_rows["customer_links"]) == 2
    ids = list(dict.fromkeys(s.customer for s in scripts))
    survivor = await live.customer(ids[3])
    assert survivor is not None and survivor.merged == sorted(ids[1:3])
    profiled = await live.customer(ids[3])
    assert profiled is not None and (profiled.tier, profiled.preferred_language) == ("platinum", "es")
    assert rebuilt_rows == live_rows
    assert repr(rebuilt_rows).encode() == repr(live_rows).encode()


async def test_rebuild_in_place_while_serving_and_projecting(
    own_store: EventStore, backends: tuple[Backend, Backend]
) -> None:
    live_b, _ = backends
    live = await live_b.open()
    reader = await live_b.open(readonly=True)
    events, scripts = traffic(4)
    await append_all(own_store, events)
    projector = Projector(own_store, live, batch_size=50, idle=0.005)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        await asyncio.wait_for(_until(lambda: live.checkpoint(), await own_store.last_seq() - 1), 20)
        before = await reader.dump()
        seen_during: list[int] = []

        async def keep_reading() -> None:
            while True:
                seen_during.append(len(await reader.timeline(scripts[0].customer, limit=1000)))
                await asyncio.sleep(0.005)

        readers = asyncio.create_task(keep_reading())
        result = await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False)
        readers.cancel()
        assert result.swapped
        # readers kept being served during the rebuild and the swap, and always saw whole rows
        expected = len([r for r in before["timeline"] if r[0] == scripts[0].customer])
        assert seen_during and set(seen_during) == {expected}
        assert await reader.dump() == before  # same rows, served without a restart
        # the running projector carries on on the fresh copy: no loss, no duplicates
        more = [scripts[0].message("after the swap"), scripts[1].message("me too")]
        await append_all(own_store, more)
        await asyncio.wait_for(_until(lambda: live.checkpoint(), await own_store.last_seq()), 20)
        texts = [e.text for e in await reader.timeline(scripts[0].customer, limit=1000)]
        assert texts.count("after the swap") == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    fresh_b = make_backend(live_b.name, Path(live_b.target).parent.parent / "other")
    try:
        await rebuild_timelines(own_store, fresh_b.target, schema=fresh_b.schema, progress=False)
        fresh = await fresh_b.open()
        assert await fresh.dump() == await live.dump()
    finally:
        await fresh_b.close_all()


async def _until(read: object, target: int) -> None:
    while await read() < target:  # type: ignore[operator]
        await asyncio.sleep(0.02)


async def test_rebuild_one_customer(own_store: EventStore, backends: tuple[Backend, Backend]) -> None:
    live_b, _ = backends
    live = await live_b.open()
    events, scripts = traffic(4)
    await append_all(own_store, events)
    await Projector(own_store, live).catch_up()
    good = await live.dump()
    assert kinds(good) >= CUSTOMER_KINDS
    ids = list(dict.fromkeys(s.customer for s in scripts))
    # ids[0]: profiled, never merged; ids[1]: merged away; ids[2]: survivor of ids[1], then
    # merged away itself; ids[3]: profiled, survivor of ids[2] (and so of ids[1]).
    for victim in ids:
        # lose that customer's rows (as a bug might), leaving the others untouched
        await live.replace_customer(victim, [], through=await live.checkpoint())
        assert await live.timeline(victim) == []
        assert await live.dump() != good
        result = await rebuild_timelines(
            own_store, live_b.target, customer=victim, schema=live_b.schema, progress=False
        )
        assert not result.swapped and result.customer == victim and result.events > 0
        rebuilt = await live.dump()
        assert rebuilt == good, victim
        assert repr(rebuilt).encode() == repr(good).encode()


async def test_rebuild_one_customer_while_the_projector_is_ahead(
    own_store: EventStore, backends: tuple[Backend, Backend]
) -> None:
    live_b, _ = backends
    live = await live_b.open()
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(own_store, [s.opened(), s.message("one")])
    await Projector(own_store, live).catch_up()
    # the projector moves past what a rebuild read, between its read and its write
    from services.timelines import CheckpointMismatch

    await append_all(own_store, [s.message("two")])
    with pytest.raises(CheckpointMismatch):
        await live.replace_customer(s.customer, [], through=1)
    await Projector(own_store, live).catch_up()
    await rebuild_timelines(own_store, live_b.target, customer=s.customer, schema=live_b.schema, progress=False)
    assert [e.text for e in await live.timeline(s.customer) if e.kind == "message_in"] == ["one", "two"]


async def test_rebuild_command(own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(own_store, [s.opened(), s.message()])
    target = str(tmp_path / "t.db")
    assert await rebuild_command(clean_nats.url, target, None) == 0
    assert await rebuild_command(clean_nats.url, target, s.customer) == 0
    assert await rebuild_command(clean_nats.url, target, "not a token!") == 2
    assert await rebuild_command("nats://127.0.0.1:1", target, None) == 2


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("{tmp}", "cannot open the timelines store {tmp}: "),  # a directory
        ("mysql://db.internal/relaydesk", "mysql:// is not a timelines store"),
        (
            "postgresql://rd:hunter2@127.0.0.1:1/x",
            "cannot open the timelines store postgresql://rd:****@127.0.0.1:1/x: ",
        ),
    ],
)
async def test_rebuild_into_a_store_it_cannot_open_says_so_in_one_line(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path, target: str, said: str
) -> None:
    """An operator's wrong --target (or [projection] dsn) ends in one line naming the store, exit
    1: it printed a traceback in a log line and ``rebuild failed: OperationalError('unable to
    open database file')`` wrapped over three lines, and ``mysql://…`` was quietly rebuilt into
    a file named ``./mysql:/…``."""
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(own_store, [s.opened(), s.message()])
    target, said = target.format(tmp=tmp_path), said.format(tmp=tmp_path)
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "rebuild", "timelines", "--nats-url", clean_nats.url,
        "--target", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    _, err_bytes = await asyncio.wait_for(done.communicate(), 60)
    err = err_bytes.decode()
    assert done.returncode == 1, err
    assert err.startswith("relaydesk rebuild: ") and said in err, err
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err and "hunter2" not in err
    assert not (tmp_path / "mysql:").exists()


async def test_rebuild_of_a_customer_without_events_is_refused_and_touches_nothing(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(own_store, [s.opened(), s.message()])
    never = tmp_path / "never.db"
    with pytest.raises(NoCustomerEvents, match="no events for customer cu_doesnotexist in the log; nothing rebuilt"):
        await rebuild_timelines(own_store, str(never), customer="cu_doesnotexist", progress=False)
    assert not never.exists()  # not even opened

    capsys.readouterr()
    assert await rebuild_command(clean_nats.url, str(never), "cu_doesnotexist") == 1
    err = capsys.readouterr().err
    assert "no events for customer cu_doesnotexist in the log; nothing rebuilt" in err
    assert "rebuilt" not in err.replace("nothing rebuilt", "")
    assert not never.exists()

    # An existing store keeps its rows (a rebuild with no events would have emptied that id's).
    target = tmp_path / "t.db"
    assert await rebuild_command(clean_nats.url, str(target), None) == 0
    ts = await open_store(str(target), readonly=True)
    try:
        before = await ts.dump()
        assert await rebuild_command(clean_nats.url, str(target), "cu_doesnotexist") == 1
        assert await ts.dump() == before
    finally:
        await ts.close()

    # The command line: the message on stderr, exit status 1.
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "rebuild", "timelines", "--nats-url", clean_nats.url,
        "--target", str(never), "--customer", "cu_doesnotexist",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err_bytes = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 1, err_bytes
    assert b"no events for customer cu_doesnotexist in the log; nothing rebuilt" in err_bytes
    assert out == b""
    assert not never.exists()


async def test_rebuild_under_partitioned_projectors_keeps_their_keys(
    own_store: EventStore, backends: tuple[Backend, Backend]
) -> None:
    live_b, _ = backends
    live = await live_b.open()
    events, _ = traffic(4)
    await append_all(own_store, events)
    for i in range(2):
        await Projector(own_store, live, partition=(i, 2)).catch_up()
    before = await live.dump()
    result = await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False)
    assert await live.checkpoints() == {"p0of2": result.checkpoint, "p1of2": result.checkpoint}
    assert await live.dump() == before
