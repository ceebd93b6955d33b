"""A service's connection to NATS: connected within a bounded time or refused with the reason,
and watched for as long as it lives, so a connection the service can no longer use (its
credentials rotated away, closed by the server) stops the service with the reason instead of
leaving it up and never ready."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS

from events.skips import count_skip
from services.bus.auth import NatsAuth, describe_servers, server_list
from services.bus.waiting import said_while_connecting
from services.config import ConfigError

log = structlog.get_logger(__name__)


class ServiceFailed(Exception):
    """A service cannot run (a port taken, a bad setting): the reason, for a person.

    An ordinary exception on purpose: ``SystemExit`` raised inside an asyncio task escapes
    the event loop and skips ``relaydesk up``'s orderly stop of the other services."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionWatch:
    """Whether a connection that once logged in has become unusable: the server refused its
    credentials on every reconnect for ``patience`` seconds, or closed it for good (nats.py
    closes rather than reconnects when a server reloads users without this one's password)."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.lost = asyncio.Event()
        self.reason = ""
        self.closing = False  # set before our own close or drain: that close is no loss
        self._refused_since: float | None = None

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    def refused(self, reason: str) -> None:
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        elif now - self._refused_since >= self.patience:
            self._lose(reason)

    def accepted(self) -> None:
        self._refused_since = None

    def closed(self, reason: str) -> None:
        if not self.closing:
            self._lose(reason)


# Per connection, the permission violations the server reported (their text names the subject),
# and the watch on whether it is still usable.
_DENIED: dict[int, list[str]] = {}
_WATCHES: dict[int, ConnectionWatch] = {}


def permission_denied(nc: NATS) -> str:
    """The last permission violation the server reported on ``nc`` ("" if none)."""
    seen = _DENIED.get(id(nc))
    return seen[-1] if seen else ""


def keep_denials(nc: NATS, denied: list[str]) -> None:
    """``nc``'s permission violations are the ones its error callback keeps in ``denied``."""
    _DENIED[id(nc)] = denied


def denials_from_now(nc: NATS) -> Callable[[], str]:
    """The permission violation the server reports on ``nc`` after this call ("" while none):
    a refused request answers nothing and so looks like a slow NATS, where waiting longer
    would not help (``events.streams.patiently``'s ``give_up``)."""
    before = permission_denied(nc)

    def new() -> str:
        denied = permission_denied(nc)
        return denied if denied != before else ""

    return new


def watch_of(nc: NATS) -> ConnectionWatch | None:
    """The watch ``connect_nats`` keeps on ``nc`` (None for other connections)."""
    return _WATCHES.get(id(nc))


def forget(nc: NATS) -> None:
    """Before closing ``nc`` on purpose: its close is no loss, and its records go."""
    watch = _WATCHES.pop(id(nc), None)
    if watch is not None:
        watch.closing = True
    _DENIED.pop(id(nc), None)


async def reconnecting_stopped(nc: NATS, *, give_up_after: float = 10.0) -> None:
    """After ``nc`` was closed or drained: make sure its reconnect loop has ended. nats-py's
    close cancels it, and on Python 3.11 that cancellation is lost when it lands as a connect
    attempt fails (``asyncio.wait_for`` hands back the attempt's error instead): a client
    closed during an outage went on trying the server, logging a traceback every
    ``reconnect_time_wait``, and could hold up the process's exit (found by a test audit)."""
    task: asyncio.Task[None] | None = getattr(nc, "_reconnection_task", None)
    deadline = asyncio.get_running_loop().time() + give_up_after
    while task is not None and not task.done():
        if asyncio.get_running_loop().time() > deadline:
            log.warning("nats.reconnect_loop_left", client=nc.options.get("name"), skipped="ending its reconnect loop")
            count_skip("nats.reconnect_loop")
            return
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


async def let_go(nc: NATS, *, drain: bool = True) -> None:
    """Drain (or close) ``nc`` and end its reconnect loop (``reconnecting_stopped``), whatever
    state NATS is in. A close during an outage may raise, out of nats-py, the ``CancelledError``
    of its own socket's close waiter (a reconnect attempt it cancelled): found by a full test run,
    a closing tool or service took it for its own cancellation and stopped its clean-up half way.
    That one is logged and counted; a cancellation of the caller itself goes on out."""
    task = asyncio.current_task()
    try:
        await (nc.drain() if drain else nc.close())
    except asyncio.CancelledError:
        if task is not None and task.cancelling():
            # The caller is going: its reconnect loop is told to end too, without waiting.
            loop_task: asyncio.Task[None] | None = getattr(nc, "_reconnection_task", None)
            if loop_task is not None:
                loop_task.cancel()
            raise
        log.warning("nats.close_interrupted", client=nc.options.get("name"), skipped="waiting for the socket to close")
        count_skip("nats.close")
    except Exception as err:  # NATS away or slow: nothing is left to flush to a server that is gone
        log.warning("nats.close_failed", client=nc.options.get("name"), error=repr(err)[:200])
        count_skip("nats.close")
    await reconnecting_stopped(nc)


def is_permission_error(err: Exception) -> bool:
    return "permissions violation" in str(err).lower()


def is_credentials_error(err: BaseException | None) -> bool:
    return err is not None and (
        isinstance(err, nats.errors.AuthorizationError) or "authorization violation" in str(err).lower()
    )


# What a service whose login is refused after it had logged in says (tests match it).
ROTATED = "were they rotated? Restart with the new [nats] password"


class SlowConsumerLog:
    """nats-py reports every message a slow subscription dropped as one error: found by an
    audit, a replay after a surge wrote 1.3 million "slow consumer, messages dropped" lines
    (400 MB in 6 minutes). Said here once per ``every`` seconds per client, with the count and
    the subjects, and counted (``relaydesk_skipped_total{where="nats.slow_consumer"}``). The
    readers that must not lose messages notice the gap by sequence and read again."""

    def __init__(self, client: str, every: float = 10.0) -> None:
        self.client, self.every = client, every
        self.dropped = 0
        self.subjects: set[str] = set()
        self.last_said = 0.0

    def note(self, err: Exception) -> None:
        count_skip("nats.slow_consumer")
        self.dropped += 1
        if len(self.subjects) < 5:
            self.subjects.add(str(getattr(err, "subject", "") or "?"))
        now = time.monotonic()
        if now - self.last_said >= self.every:
            log.warning(
                "nats.slow_consumer",
                client=self.client,
                dropped=self.dropped,
                subjects=sorted(self.subjects),
                within_s=round(now - self.last_said, 1) if self.last_said else None,
            )
            self.last_said, self.dropped = now, 0
            self.subjects.clear()


def why_unreachable(err: BaseException) -> str:
    """What a failed connection attempt says, for a person ("connection refused", …)."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):  # said "TimeoutError" (found by an ops audit)
        return "no answer (a firewall dropping packets, or not a NATS port?)"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


async def connect_nats(url: str, *, name: str, timeout: float = 5.0, auth: NatsAuth | None = None) -> NATS:
    """Connect within three times ``timeout`` or exit with why (refused credentials, the last network
    error); then reconnect for as long as it takes, with the watch above kept on it."""
    denied: list[str] = []
    refused: list[str] = []
    failures: list[str] = []  # why each first-connection attempt failed; the last is said at the end
    who = (auth or NatsAuth()).describe()
    # A lost login gets the patience a first connection gets (below) before the service stops.
    watch = ConnectionWatch(patience=timeout * 3)
    connected: list[NATS] = []

    slow = SlowConsumerLog(name)

    async def error_cb(err: Exception) -> None:
        if is_permission_error(err):
            denied.append(str(err))
            del denied[:-10]
            log.error("nats.permission_denied", error=str(err), client=name, who=who)
            return
        if is_credentials_error(err):
            refused.append(str(err))
            del refused[:-10]
            log.error("nats.credentials_refused", client=name, who=who)
            if connected:
                watch.refused(
                    f"NATS at {where} has refused the credentials ({who}) on every reconnect for "
                    f"{watch.patience:.0f} s: {ROTATED}"
                )
            return
        if isinstance(err, nats.errors.SlowConsumerError):
            slow.note(err)
            return
        failures.append(why_unreachable(err))
        del failures[:-3]
        log.warning("nats.error", error=str(err), client=name)

    async def disconnected_cb() -> None:
        if connected and (connected[0].is_closed or connected[0].is_draining):
            log.debug("nats.disconnected", client=name, why="closed")  # our own close: nothing to warn of
            return
        log.warning("nats.disconnected", client=name)

    async def reconnected_cb() -> None:
        watch.accepted()
        log.info("nats.reconnected", client=name)

    async def closed_cb() -> None:
        # nats.py closes for good, without reconnecting, when the server sends an error that
        # ends the connection (users reloaded without this one's password, …); our own close
        # leaves no such error, or one of those it reconnects after.
        last = connected[0].last_error if connected else None
        if watch.closing or not isinstance(last, nats.errors.Error) or is_permission_error(last):
            return
        if is_credentials_error(last):
            reason = f"NATS at {where} refused the credentials ({who}) and closed the connection: {ROTATED}"
        else:
            reason = f"NATS at {where} closed the connection: {last}"
        log.error("nats.closed", client=name, who=who, reason=reason)
        watch.closed(reason)

    # One URL or several (a cluster: "nats://a:4222,nats://b:4222"): nats.py takes a list.
    try:
        servers = server_list(url)
    except ConfigError as err:
        raise SystemExit(f"relaydesk: {err}") from err
    where = describe_servers(servers)  # for messages: passwords in URLs masked
    # Bounded: on a first connection nats.py keeps retrying forever, deaf to SIGTERM.
    options = (auth or NatsAuth()).connect_options()
    connecting = nats.connect(
        servers,
        name=name,
        connect_timeout=timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        closed_cb=closed_cb,
        **options,
    )
    try:
        async with said_while_connecting(where, timeout * 3, timeout, failures):
            nc = await asyncio.wait_for(connecting, timeout * 3)
    except (TimeoutError, OSError, nats.errors.NoServersError, nats.errors.Error) as err:
        if refused or is_credentials_error(err):
            raise SystemExit(f"NATS at {where} refused the connection ({who}): check [nats] user/password") from err
        if not isinstance(err, (TimeoutError, OSError, nats.errors.NoServersError)):
            raise
        why = failures[-1] if failures else (str(err) or "no answer")
        raise SystemExit(f"cannot reach NATS at {where}: {why} (tried for {timeout * 3:.0f} s)") from err
    _DENIED[id(nc)] = denied
    _WATCHES[id(nc)] = watch
    connected.append(nc)
    return nc


async def until_connection_lost(running: Coroutine[Any, Any, None], nc: NATS, stop: asyncio.Event) -> None:
    """Run a service until it ends, or until ``nc`` is lost for good (see ``ConnectionWatch``):
    then stop it as on SIGTERM and fail with the reason, so a supervisor sees a failed service
    and restarts it, rather than one that stays up and never ready."""
    watch = watch_of(nc)
    service = asyncio.ensure_future(running)
    if watch is None:
        await service
        return
    lost = asyncio.create_task(watch.lost.wait())
    try:
        await asyncio.wait([service, lost], return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
    if not service.done():
        log.error("nats.connection_lost", reason=watch.reason)
        stop.set()
        await service
        raise ServiceFailed(watch.reason)
    service.result()
