"""Event builders and backend handles shared by the timeline tests."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events import subjects
from events.model import (
    AgentOffered,
    Channel,
    ConversationAssigned,
    ConversationEscalated,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerCreated,
    DecisionReason,
    DeliveryFailed,
    EscalationStepReached,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.timelines import TimelineStore, open_store
from tests.natsserver import docker_answers

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


REASON = DecisionReason(rule="best_fit", step=0, score={"skill": 3.0, "load": -1.0})


@dataclass
class Script:
    """Builds a plausible conversation's events with increasing timestamps."""

    customer: str
    conversation: str
    channel: Channel = "sms"
    clock: datetime = T0
    n: int = 0

    def _at(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def _ids(self) -> dict[str, Any]:
        return {"at": self._at(), "customer_id": self.customer, "conversation_id": self.conversation}

    def created(self) -> CustomerCreated:
        return CustomerCreated(at=self._at(), customer_id=self.customer, identity=f"{self.channel}:+15551234567")

    def opened(self) -> ConversationOpened:
        return ConversationOpened(**self._ids(), channel=self.channel, contact="+15551234567")

    def message(self, text: str = "hello") -> MessageReceived:
        self.n += 1
        return MessageReceived(
            **self._ids(),
            channel=self.channel,
            message_id=f"m{self.n}",
            provider_message_id=f"SM{self.n}",
            text=text,
            language="en",
        )

    def routing(self) -> RoutingRequested:
        return RoutingRequested(
            **self._ids(),
            channel=self.channel,
            requirements=Requirements(
                skills={"billing": 1}, language="en", priority=2, sla_due=self.clock + timedelta(minutes=5)
            ),
        )

    def offered(self, agent: str) -> AgentOffered:
        return AgentOffered(**self._ids(), agent_id=agent, expires_at=self.clock + timedelta(seconds=30), reason=REASON)

    def accepted(self, agent: str) -> OfferAccepted:
        return OfferAccepted(**self._ids(), agent_id=agent, actor=agent)

    def declined(self, agent: str) -> OfferDeclined:
        return OfferDeclined(**self._ids(), agent_id=agent)

    def expired(self, agent: str) -> OfferExpired:
        return OfferExpired(**self._ids(), agent_id=agent)

    def assigned(self, agent: str) -> ConversationAssigned:
        return ConversationAssigned(**self._ids(), agent_id=agent, channel=self.channel, reason=REASON)

    def step(self, n: int) -> EscalationStepReached:
        return EscalationStepReached(**self._ids(), step=n, relaxation="drop_preferred_agent")

    def transferred(self, src: str, dst: str | None = None) -> ConversationTransferred:
        return ConversationTransferred(**self._ids(), from_agent=src, to_agent=dst, to_skill="technical", note="n/a")

    def escalated(self, src: str) -> ConversationEscalated:
        return ConversationEscalated(**self._ids(), from_agent=src, to_tier=2, reason="angry customer")

    def released(self, agent: str) -> ConversationReleased:
        return ConversationReleased(**self._ids(), agent_id=agent, reason="offline")

    def reply(self, agent: str, text: str = "on it") -> ReplyRequested:
        self.n += 1
        return ReplyRequested(**self._ids(), channel=self.channel, reply_id=f"r{self.n}", agent_id=agent, text=text)

    def sent(self, reply_id: str) -> MessageSent:
        return MessageSent(**self._ids(), channel=self.channel, reply_id=reply_id, provider_message_id="SMout")

    def failed(self, reply_id: str) -> DeliveryFailed:
        return DeliveryFailed(**self._ids(), channel=self.channel, reply_id=reply_id, reason="carrier rejected")

    def resolved(self, agent: str) -> ConversationResolved:
        return ConversationResolved(**self._ids(), agent_id=agent, actor=agent)

    def full(self, agent: str = "ava") -> list[LogEvent]:
        """Every kind of conversation event, in a plausible order."""
        return [
            self.opened(),
            self.message("I was charged twice"),
            self.routing(),
            self.step(1),
            self.offered("bruno"),
            self.declined("bruno"),
            self.offered("chen"),
            self.expired("chen"),
            self.assigned(agent),
            self.reply(agent, "Sorry! Refunding now."),
            self.sent("r2"),
            self.transferred(agent, "chen"),
            self.offered("chen"),
            self.accepted("chen"),
            self.escalated("chen"),
            self.assigned("dora"),
            self.reply("dora", "second try"),
            self.failed("r3"),
            self.released("dora"),
            self.assigned(agent),
            self.resolved(agent),
        ]


@dataclass
class Seq:
    """Assigns stream sequences to events for store tests without NATS."""

    next: int = 1
    gap: int = 0  # leave holes, as agent events do in the real log
    log: list[StoredEvent] = field(default_factory=list)

    def __call__(self, events: Sequence[LogEvent]) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for ev in events:
            out.append(StoredEvent(seq=self.next, subject=subjects.for_event(ev), event=ev))
            self.next += 1 + self.gap
        self.log.extend(out)
        return out

    def history(self, customer_id: str) -> list[StoredEvent]:
        """Every event handed out so far on that customer's subjects (its stream filter)."""
        prefix = f"rd.evt.c.{customer_id}."
        return [e for e in self.log if e.subject.startswith(prefix)]


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Backend:
    """One timeline backend with a place of its own (a file, or a schema)."""

    name: str
    target: str
    schema: str | None = None
    opened: list[TimelineStore] = field(default_factory=list)

    async def open(self, *, readonly: bool = False) -> TimelineStore:
        store = await open_store(self.target, readonly=readonly, schema=self.schema)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for s in self.opened:
            await s.close()
        self.opened.clear()
        if self.schema is not None:
            await drop_schemas(self.target, self.schema)


PG_DSN_ENV = "RELAYDESK_TEST_PG_DSN"
LOCAL_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_IMAGE = "postgres:16-alpine"


@dataclass(frozen=True)
class Postgres:
    dsn: str | None  # None: no server answers, and the tests that need one skip
    about: str  # where it runs, or why there is none


@functools.cache
def postgres() -> Postgres:
    """The PostgreSQL server of this test process, found on first use: ``RELAYDESK_TEST_PG_DSN``
    if set; else a testcontainers container when a Docker engine answers (as ``tests/natsserver``
    picks NATS); else the local server at 127.0.0.1:5432, its ``test`` database created if
    missing. Every test's tables live in a schema of its own (``make_backend``)."""
    explicit = os.environ.get(PG_DSN_ENV)
    if not explicit and docker_answers():
        try:
            return Postgres(_start_container(), f"a {PG_IMAGE} container")
        except Exception as err:
            return Postgres(None, f"a Docker engine answers, but the {PG_IMAGE} container did not start: {err}")
    dsn = explicit or LOCAL_PG_DSN
    reason = ensure_database(dsn)
    return Postgres(None, reason) if reason else Postgres(dsn, f"PostgreSQL at {_where(dsn)}")


def pg_dsn() -> str:
    """The DSN for a test that needs PostgreSQL; skips the test, saying why, when there is none."""
    found = postgres()
    if found.dsn is None:
        pytest.skip(found.about)
    return found.dsn


def _start_container() -> str:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before its community/ layout
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(PG_IMAGE, driver=None)  # driver=None: a plain postgresql:// URL
    container.start()
    atexit.register(container.stop)
    return str(container.get_connection_url())


def _where(dsn: str) -> str:
    """``dsn`` without its password."""
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    return f"{d.get('user') or '(default user)'}@{d.get('host', '')}:{d.get('port', 5432)}/{d.get('dbname')}"


def ensure_database(dsn: str) -> str | None:
    """None when ``dsn`` answers, creating its database (from the ``postgres`` maintenance
    database) when the server has not got it; else why there is no PostgreSQL."""
    import psycopg
    from psycopg import errors, sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    def said(err: Exception) -> str:
        return " ".join(str(err).split())

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as err:
        refused = f"no PostgreSQL at {_where(dsn)}: {said(err)}"
    dbname = conninfo_to_dict(dsn).get("dbname")
    if not dbname or dbname == "postgres":
        return refused
    try:
        maintenance = psycopg.connect(make_conninfo(dsn, dbname="postgres"), connect_timeout=2, autocommit=True)
    except psycopg.Error:
        return refused  # no server answers (or it lets us in nowhere): the first refusal says why
    try:
        with maintenance:
            if maintenance.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                return refused  # the database is there: the server refused for another reason
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):  # created meanwhile
                maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except psycopg.Error as err:
        return f"{refused}; creating database {dbname!r} failed: {said(err)}"
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"created database {dbname!r}, but PostgreSQL at {_where(dsn)} refused: {said(err)}"
    return None


async def drop_schemas(dsn: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                (schema, schema.replace("_", r"\_") + r"\_\_%"),
            )
        ).fetchall()
        for (name,) in rows:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


BACKENDS = ["sqlite", "postgres"]  # postgres: skips, saying why, when no server answers (pg_dsn)


def make_backend(name: str, tmp_path: Path) -> Backend:
    """A backend of its own: a fresh SQLite file, or a fresh schema (skips without PostgreSQL)."""
    if name == "sqlite":
        return Backend(name, str(tmp_path / "timelines.db"))
    return Backend(name, pg_dsn(), schema=new_id("t_"))


def iter_kinds(entries: list[Any]) -> Iterator[str]:
    for e in entries:
        yield e.kind
