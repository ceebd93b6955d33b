"""How a stream, KV bucket or object store is set up: patiently (a busy or electing NATS is
waited out within a budget), and with its drift from the wanted config found, fixed where NATS
allows it, and reported where it does not. The registry of what Relaydesk uses is
``events.streams``; this module is the mechanics every creator shares."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from events.stream_overlap import OVERLAP_ERROR, subjects_of, who_overlaps
from events.stream_specs import (
    Drift,
    StoreSpec,
    compare,
    deletes_data,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How long a start-up waits for NATS to answer its set-up calls (a server restarting, a
# cluster electing its meta leader, a machine at load 8) before it gives up with the reason.
SETUP_BUDGET_S = 60.0

# "Not now" answers: the request may succeed later (a server restarting, a reconnect).
TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    ConnectionError,
)
# JetStream errors that mean "not now" in a cluster: no meta leader yet (10008), not enough
# resources or peers up for the replicas yet (10023, 10005). Other 4xx/5xx answers refuse.
_TRANSIENT_CODES = frozenset({10005, 10008, 10023})


def is_transient(err: BaseException) -> bool:
    if isinstance(err, (*TRANSIENT, ServiceUnavailableError)):
        return True
    return isinstance(err, APIError) and err.err_code in _TRANSIENT_CODES


class SetupFailed(RuntimeError):
    """A set-up call did not succeed within its budget (or was refused): the reason, for a person."""


def describe(err: BaseException) -> str:
    if isinstance(err, APIError):
        return f"{type(err).__name__} {err.err_code or ''} {err.description or ''}".strip()
    return f"{type(err).__name__} {err}".strip()


async def patiently(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    budget: float = SETUP_BUDGET_S,
    give_up: Callable[[BaseException], str] | None = None,
) -> T:
    """``await op()``, again after each timeout / no responders / 503 with a growing pause (one
    log line per retry), until ``budget`` seconds have passed: then ``SetupFailed`` naming
    ``what`` and the last error. ``give_up(err)`` may name a reason to stop waiting at once
    (a permission refused looks like a timeout). Other errors are raised as they are."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    pause = 0.25
    tries = 0
    while True:
        tries += 1
        try:
            return await op()
        except Exception as err:
            if not is_transient(err):
                raise
            reason = give_up(err) if give_up is not None else ""
            if reason:
                raise SetupFailed(f"{what}: {reason}") from err
            left = deadline - loop.time()
            if left <= 0:
                raise SetupFailed(
                    f"{what}: NATS did not answer within {budget:.0f} s ({tries} tries): {describe(err)}"
                ) from err
            wait = min(pause, left)
            log.warning("nats.setup_retry", what=what, error=describe(err), retry_in_s=round(wait, 2), tries=tries)
            await asyncio.sleep(wait)
            pause = min(pause * 2, 5.0)


async def _create(js: JetStreamContext, spec: StoreSpec) -> None:
    c = spec.config
    try:
        if isinstance(c, StreamConfig):
            await js.add_stream(c)
        elif isinstance(c, KeyValueConfig):
            await js.create_key_value(c)
        else:
            await js.create_object_store(c.bucket or spec.name.removeprefix("OBJ_"), c)
    except APIError as err:
        if is_transient(err):
            raise
        # e.g. replicas > 1 on a single server: no wait helps, the config must change.
        why = describe(err)
        if err.err_code == OVERLAP_ERROR:
            why += await who_overlaps(js, spec.name, subjects_of(spec.name, c))
        raise SetupFailed(f"NATS refused to create {spec.name}: {why}") from err
    log.info("streams.created", name=spec.name, kind=spec.kind, replicas=spec.wanted().get("num_replicas"))


async def ensure_store(
    js: JetStreamContext, spec: StoreSpec, *, create: bool = True, update: bool = True, shrink: bool = False
) -> tuple[list[Drift], StreamConfig | None]:
    """Create ``spec`` if missing (``create``), else compare it with the wanted config and, with
    ``update``, change the drifted fields in place (``streams.updated``): all at once, and on a
    refusal one at a time, so each refusal names its field (``streams.update_refused``).
    A change that would delete stored messages (a retention or size limit set lower, or where
    there was none) is made only with ``shrink`` (``relaydesk setup``): a service starting
    with an older or different config kept deleting what an operator chose to keep
    (``streams.limit_kept`` says so instead). Returns the drift found (each with its outcome)
    and the stream's config as it stands (None: missing, not created)."""
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        if not create:
            return [], None
        await _create(js, spec)
        info = await js.stream_info(spec.name)
        return [], info.config
    current = info.config
    found = compare(spec, current)
    if not update:
        return found, current
    if not found:
        return [], current
    kept: list[Drift] = []
    if not shrink:
        kept = [
            dataclasses.replace(d, status="kept")
            for d in found
            if deletes_data(d.field, d.old, d.new) and await _would_delete(js, info, d)
        ]
        for d in kept:
            log.warning("streams.limit_kept", name=spec.name, field=d.field, old=d.old, new=d.new,
                        why="lowering it would delete stored messages now", fix="relaydesk setup")  # fmt: skip
        held = {d.field for d in kept}
        found = [d for d in found if d.field not in held]
        if not found:
            return kept, current
    changes = {d.field: _raw(spec, d) for d in found}
    try:
        # All at once first: some fields only change together (max_age below the duplicate window).
        current = (await js.update_stream(dataclasses.replace(current, **changes))).config
    except APIError as err:
        if is_transient(err):
            raise
        # Refused: one field at a time, so each refusal names its field and the rest still apply.
        return kept + await _update_each(js, spec, found, current), current
    for d in found:
        log.warning("streams.updated", name=spec.name, field=d.field, old=d.old, new=d.new)
    return kept + [dataclasses.replace(d, status="updated") for d in found], current


async def _would_delete(js: JetStreamContext, info: StreamInfo, drift: Drift) -> bool:
    """Whether lowering ``drift``'s limit deletes a message the stream holds now (a limit
    still above what it holds deletes nothing, and is applied at any start)."""
    state = info.state
    if not state.messages:
        return False
    if drift.field == "max_bytes":
        return bool(state.bytes > drift.new)
    if drift.field == "max_msgs":
        return bool(state.messages > drift.new)
    if drift.field == "max_age":
        try:
            oldest = await js.get_msg(info.config.name or "", state.first_seq)
        except (NotFoundError, APIError):
            return True  # not known: keep what is there
        if not isinstance(oldest.time, datetime):
            return True
        return bool(datetime.now(UTC) - oldest.time > timedelta(seconds=float(drift.new)))
    return True  # per-subject counts are not known without reading every subject


def _raw(spec: StoreSpec, drift: Drift) -> Any:
    """The value to send for a drifted field (the spec's own, or what the server means by unset)."""
    raw = getattr(spec.config, drift.field) if isinstance(spec.config, StreamConfig) else drift.new
    if raw is None and drift.field in ("max_age", "max_bytes", "max_msgs_per_subject"):
        raw = 0 if drift.field == "max_age" else -1
    return raw


async def _update_each(js: JetStreamContext, spec: StoreSpec, found: list[Drift], current: StreamConfig) -> list[Drift]:
    out: list[Drift] = []
    for drift in found:
        try:
            current = (await js.update_stream(dataclasses.replace(current, **{drift.field: _raw(spec, drift)}))).config
        except APIError as err:
            if is_transient(err):
                raise
            refused = dataclasses.replace(drift, status="refused", reason=describe(err))
            log.error("streams.update_refused", name=spec.name, field=drift.field, old=drift.old, new=drift.new,
                      error=refused.reason)  # fmt: skip
            out.append(refused)
            continue
        log.warning("streams.updated", name=spec.name, field=drift.field, old=drift.old, new=drift.new)
        out.append(dataclasses.replace(drift, status="updated"))
    return out


@dataclass
class Outcome:
    """What one ``ensure_streams`` pass did."""

    drift: list[Drift] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[Drift]:
        return [d for d in self.drift if d.status == "refused"]
