"""Plans: what a store does, written once for both backends and run by either.

A plan is a generator that yields statements (``Fetch``, ``Execute``, ``ExecuteMany``) and
receives what each returned (the rows of a ``Fetch``, else None); its return value is the
result. It does no I/O itself, so the same plan runs on SQLite's blocking connection (``run``,
on the store's thread, inside its transaction) and on psycopg's async one (``run_async``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class Fetch(NamedTuple):
    """A query; the plan receives its rows."""

    sql: str
    args: Sequence[Any] = ()


class Execute(NamedTuple):
    sql: str
    args: Sequence[Any] = ()


class ExecuteMany(NamedTuple):
    sql: str
    rows: Sequence[Sequence[Any]]


Step = Fetch | Execute | ExecuteMany
Rows = list[tuple[Any, ...]]
Plan = Generator[Step, Any, T]


class Done(NamedTuple):
    value: Any


def advance(plan: Plan[Any], result: Rows | None) -> Step | Done:
    """Hand ``result`` to ``plan``: its next statement, or ``Done`` with what it returned."""
    try:
        return plan.send(result)
    except StopIteration as done:
        return Done(done.value)


def run(plan: Plan[T], execute: Callable[[Step], Rows | None]) -> T:
    """Run ``plan`` with a blocking ``execute``."""
    step = advance(plan, None)
    while not isinstance(step, Done):
        step = advance(plan, execute(step))
    out: T = step.value
    return out


async def run_async(plan: Plan[T], execute: Callable[[Step], Awaitable[Rows | None]]) -> T:
    """Run ``plan`` with an async ``execute``."""
    step = advance(plan, None)
    while not isinstance(step, Done):
        step = advance(plan, await execute(step))
    out: T = step.value
    return out


def send(step: Step, target: Any) -> Any:
    """Start ``step`` on ``target``, a DB-API style connection or cursor (sqlite3's, or an
    async psycopg one: then await the result); ``fetchall`` is next for a ``Fetch``."""
    if isinstance(step, ExecuteMany):
        return target.executemany(step.sql, step.rows)
    return target.execute(step.sql, step.args)


def single(step: Step) -> Plan[Rows]:
    """A plan of one statement."""
    rows: Rows = (yield step) or []
    return rows


def each(steps: Iterable[Step]) -> Plan[None]:
    """A plan of these statements, one after the other."""
    yield from steps
