"""Run one sink: follow the log from its saved position (one active instance, by lease) and
serve the helpdesk's webhooks plus ``/healthz``, ``/readyz`` and ``/metrics`` (those handlers:
``serving.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from nats.aio.client import Client as NATS

from connectors.sdk import runtime as connector_runtime
from events import subjects
from events.codec import Undecodable
from events.model import ConversationResolved, UnknownEvent
from events.skips import count_skip
from events.store import EventStore, StoredEvent, Tail
from services.bus.errors import NATS_ERRORS
from services.lease import Lease

from .actions import Relaydesk
from .base import Sink, SinkEvent
from .errors import AuthFailed, Rejected, SinkError, Transient
from .holding import LeaseLost, while_holding
from .metrics import SINK_EVENTS
from .reload import SettingsSource, reload_api
from .serving import SinkHttp
from .state import ParkedEvent, SinkState

log = structlog.get_logger("relaydesk.sink")

SAVE_EVERY = 200  # events passed over without handling before the position is saved anyway


class SinkRuntime(SinkHttp):
    """``await start()`` opens the sink's bucket and API client, serves its webhooks on
    ``settings.host:settings.port`` and starts following the log; it returns the URLs it
    listens on. ``await stop()`` stops both (after the event being handled) and releases the
    lease. The NATS connection and the store belong to the caller."""

    def __init__(
        self,
        sink: Sink,
        nc: NATS,
        store: EventStore,
        *,
        instance_id: str = "",
        settings: SettingsSource | None = None,
    ) -> None:
        self.sink = sink
        # Read again while the helpdesk refuses the credentials (``reload``); None: never.
        self.settings = settings
        self.nc = nc
        self.store = store.for_reader(f"sink:{sink.name}") if isinstance(store, EventStore) else store
        self.instance_id = instance_id or f"sink-{sink.name}-{uuid.uuid4().hex[:8]}"
        self.urls: list[str] = []
        self.role = "starting"  # standby | leader | stopped
        self.position = 0
        self.last_error = ""
        self.auth_failed = False
        # When the helpdesk last refused our credentials while the sink answered its webhook (no
        # log event need be waiting for the sink to find out): see ``webhook_auth_failed``.
        self._webhook_auth_failed_at: float | None = None
        self._webhook_reloaded_at = -math.inf  # monotonic time of the last settings re-read for a webhook
        self.stalled_on: int | None = None  # the event being retried after a passing failure
        self._runner: web.AppRunner | None = None
        self._follow: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._parked = -1  # the sequence of the last event parked
        self.log = log.bind(sink=sink.name, instance=self.instance_id)

    # -- life cycle ----------------------------------------------------------------------

    async def attach(self) -> None:
        """Open the sink's bucket and API client and give them to the sink (``start`` does it;
        a one-shot such as ``retry_parked`` calls it alone, then ``close``)."""
        state = await SinkState.open(self.nc.jetstream(), self.sink.name, replicas=self.sink.settings.replicas)
        api = self.sink.make_api()
        await api.open()
        self.sink.attach(state, Relaydesk(self.store, self.nc, self.sink.actor), api)

    async def close(self) -> None:
        await self.sink.api.close()

    async def start(self) -> list[str]:
        s = self.sink.settings
        await self.attach()
        api = self.sink.api
        app = web.Application(client_max_size=s.max_body_bytes + 1)
        for path in self.sink.webhook_paths:
            app.router.add_post(path, self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=connector_runtime.IDLE_CONNECTION_TIMEOUT,  # as the connectors' ports
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, s.host, s.port).start()
        except OSError as err:
            await runner.cleanup()
            await api.close()
            name = self.sink.name
            raise SinkError(
                f"sink {name} cannot listen on {s.host}:{s.port}: {err.strerror} (choose another port:"
                f" [sinks.{name}] port or RELAYDESK_SINK_{name.upper()}_PORT)"
            ) from err
        self._runner = runner
        self.urls = [_url(addr) for addr in runner.addresses]
        self._stop.clear()
        self._follow = asyncio.create_task(self._follow_log(), name=f"sink-{self.sink.name}")
        self.log.info("sink.started", urls=self.urls)
        return self.urls

    async def stop(self) -> None:
        self._stop.set()
        if self._follow is not None:
            await self._follow
            self._follow = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sink.api.close()
        self.role = "stopped"
        self.log.info("sink.stopped", position=self.position)

    # -- following the log -----------------------------------------------------------------

    async def _follow_log(self) -> None:
        lease_kv = await self.nc.jetstream().key_value(subjects.LEASE_BUCKET)
        lease = Lease(lease_kv, f"sink.{self.sink.name}", self.instance_id, ttl=self.sink.settings.lease_seconds)
        self.role = "standby"
        try:
            while not self._stop.is_set():
                if not await lease.try_acquire():
                    await self._pause(lease.ttl / 2)
                    continue
                self.role = "leader"
                self.log.info("sink.leading")
                try:
                    await self._lead(lease)
                except NATS_ERRORS as err:
                    self.last_error = f"NATS: {type(err).__name__}"
                    self.log.warning("sink.nats_unavailable", error=repr(err))
                    await self._pause(1.0)
                self.role = "standby"
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await lease.release()

    async def _lead(self, lease: Lease) -> None:
        state = self.sink.state
        saved = await state.position()
        if saved is None:
            saved = await self.store.last_seq() if self.sink.settings.start == "end" else 0
            await state.save_position(saved)
        self.position = saved
        tail = await self.store.tail(subjects.CUSTOMER_EVENTS_ALL, saved + 1)
        renew_at = asyncio.get_running_loop().time() + lease.ttl / 3
        unsaved = 0
        try:
            while not self._stop.is_set():
                if asyncio.get_running_loop().time() >= renew_at:
                    if not await lease.renew():
                        self.log.warning("sink.lease_lost")
                        return
                    renew_at = asyncio.get_running_loop().time() + lease.ttl / 3
                stored = await tail.next(timeout=min(1.0, lease.ttl / 3))
                if stored is None:
                    if unsaved:
                        await state.save_position(self.position)
                        unsaved = 0
                    continue
                if stored.seq <= self.position:
                    continue
                outcome = await self._apply(stored, lease)
                if outcome == "lost":
                    if not self._stop.is_set():
                        self.log.warning("sink.lease_lost", seq=stored.seq)
                    return
                if outcome == "handled":
                    await state.save_position(stored.seq)
                    unsaved = 0
                else:
                    unsaved += 1
                self.position = stored.seq
                if unsaved >= SAVE_EVERY:
                    await state.save_position(self.position)
                    unsaved = 0
        finally:
            await _close(tail)

    async def _apply(self, stored: StoredEvent, lease: Lease) -> str:
        """Hand one event to the sink: "handled" (or parked), "passed" (not a kind the sink
        handles), "lost" (the lease went while the event was being retried: the next leader
        takes it from the saved position). A resolution the sink is done with (synced, its own,
        or one it does not sync) starts its link's last ``LINK_KEPT`` (``SinkState.link_ends``);
        a parked one keeps it, for ``--retry-parked``."""
        outcome = await self._hand_over(stored, lease)
        if outcome != "lost" and isinstance(stored.event, ConversationResolved) and self._parked != stored.seq:
            await self.sink.state.link_ends(stored.event.conversation_id)
        return outcome

    async def _hand_over(self, stored: StoredEvent, lease: Lease) -> str:
        event = stored.event
        if isinstance(event, UnknownEvent | Undecodable) or not isinstance(event, self.sink.handles):
            return "passed"
        if self.sink.is_own(event):
            # The sink's own fact (a helpdesk reply, a solved ticket) coming back: the
            # helpdesk has it already; syncing it again would loop.
            SINK_EVENTS.labels(sink=self.sink.name, outcome="ignored").inc()
            return "passed"
        item = SinkEvent(stored.seq, stored.subject, event)
        bound = self.log.bind(seq=stored.seq, event=type(event).__name__)
        while not self._stop.is_set():
            try:
                await while_holding(lease, self.sink.handle(item))
            except LeaseLost:
                return "lost"  # the next leader takes the event again from the saved position
            except Transient as err:
                # A passing failure: the same event again after a pause, never skipped.
                self.stalled_on, self.last_error = stored.seq, err.reason
                SINK_EVENTS.labels(sink=self.sink.name, outcome="retried").inc()
                bound.warning("sink.event_retry", reason=err.reason, pause_s=self.sink.settings.retry_pause)
                await self._pause(self.sink.settings.retry_pause)
                if not await lease.renew():
                    return "lost"
                continue
            except AuthFailed as err:
                # Expired or revoked credentials: an operator fixes them (in the config or a
                # secret file, read again before each retry: ``reload``), then every event
                # flows in order. Parking this one and going on would find later events of
                # its conversation without a ticket and drop them, so the sink waits here.
                self.stalled_on, self.last_error, self.auth_failed = stored.seq, err.reason, True
                SINK_EVENTS.labels(sink=self.sink.name, outcome="retried").inc()
                pause = self.sink.settings.auth_retry_pause
                bound.error(
                    "sink.auth_stalled",
                    reason=err.reason,
                    pause_s=pause,
                    action=f"fix the {self.sink.name} sink's API credentials (config or secret file, read again "
                    "before each retry); it waits on this event until then",
                )
                await self._pause(pause)
                if not await lease.renew():
                    return "lost"
                if self.settings is not None and not self._stop.is_set():
                    await reload_api(self.sink, self.settings, bound)  # a rotated token, before the retry
                continue
            except Rejected as err:
                await self._park(stored, err.reason)
                return "handled"
            except NATS_ERRORS:
                raise
            except Exception as err:
                bound.exception("sink.handle_crashed")
                await self._park(stored, f"sink error ({type(err).__name__}: {str(err)[:200]})")
                return "handled"
            if self.stalled_on is not None:
                if self.auth_failed:
                    bound.info("sink.auth_recovered")
                    self._webhook_auth_failed_at = None  # the same credentials: they work now
                self.stalled_on, self.last_error, self.auth_failed = None, "", False
            SINK_EVENTS.labels(sink=self.sink.name, outcome="handled").inc()
            bound.debug("sink.event_handled")
            return "handled"
        return "lost"  # stopping: not handled, the position stays before it

    async def _park(self, stored: StoredEvent, reason: str, *, auth: bool = False) -> None:
        record = ParkedEvent(
            seq=stored.seq,
            subject=stored.subject,
            type=type(stored.event).__name__,
            error=reason,
            parked_at=datetime.now(UTC),
            auth=auth,
        )
        await self.sink.state.park(record)
        self._parked = stored.seq
        SINK_EVENTS.labels(sink=self.sink.name, outcome="parked").inc()
        self.last_error = reason
        if auth:
            self.auth_failed = True
            self.log.error("sink.event_parked", seq=stored.seq, reason=reason, auth=True)
        else:
            self.log.warning("sink.event_parked", seq=stored.seq, reason=reason)

    async def retry_parked(self) -> tuple[int, int]:
        """Hand every parked event to the sink again, oldest first; (synced, still parked)."""
        done = failed = 0
        for record in await self.sink.state.parked():
            found = [s for s in await self.store.read_direct(record.subject, record.seq) if s.seq == record.seq]
            if not found or not isinstance(found[0].event, self.sink.handles):
                await self.sink.state.unpark(record.seq)
                continue
            event = found[0].event
            try:
                await self.sink.handle(SinkEvent(record.seq, record.subject, event))
            except SinkError as err:
                failed += 1
                self.log.warning("sink.parked_still_failing", seq=record.seq, reason=err.reason)
                continue
            await self.sink.state.unpark(record.seq)
            done += 1
        if not failed and self.stalled_on is None:
            self.auth_failed = False
        return done, failed

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


async def _close(tail: Tail) -> None:
    try:
        await tail.close()
    except Exception as err:  # closing after a failure: the failure itself is logged by the caller
        structlog.get_logger(__name__).warning("sink.tail_close_failed", error=repr(err))
        count_skip("sink.tail_close")


def _url(addr: Any) -> str:
    host, port = addr[0], addr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
