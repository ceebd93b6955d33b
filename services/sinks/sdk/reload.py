"""Rotated helpdesk credentials picked up without a restart.

While the helpdesk refuses the sink's credentials (401/403), the runtime waits on the event
and, before each retry, asks its ``SettingsSource`` for the ``[sinks.<name>]`` table again
(``relaydesk sink NAME`` and ``relaydesk up`` give one that re-reads the config file, the
environment and the ``RELAYDESK_<NAME>_FILE`` secret files the process started with). When a
setting the API client is built from changed (``Sink.api_settings``: the URL, the
credentials, the API timings), the sink takes those settings, builds a new client
(``make_api``) and closes the old one: the next retry uses the new token. No other setting
changes while the sink runs (its webhook secret, agents, port… take a restart).

A re-read that fails (a secret file gone, a config file that is no longer valid TOML, a token
now empty) is logged and changes nothing: the sink keeps the settings it has. Logs name the
keys that changed or the problem, never a value.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import msgspec

from events.skips import count_skip

from .base import Sink
from .errors import SinkConfigError


class SettingsUnavailable(SinkConfigError):
    """The settings source cannot give the table now; ``reason`` names the problem (never a value)."""


class SettingsSource(ABC):
    """Where a sink's raw ``[sinks.<name>]`` table comes from, read again on demand (a port:
    the composition roots give one that reads the config file and the environment; tests and
    the conformance kit give a fake)."""

    @abstractmethod
    def __call__(self) -> Mapping[str, Any]:
        """The raw table as its sources say now; ``SettingsUnavailable`` when they cannot be
        read or do not validate. Called in a worker thread (it may read files)."""


async def reload_api(sink: Sink, source: SettingsSource, log: Any) -> list[str]:
    """Re-read ``sink``'s settings from ``source``; when a setting its API client is built from
    changed, take it, rebuild the client and close the old one. Returns the keys that changed
    (empty: nothing did, or the re-read failed, which is logged)."""
    try:
        raw = await asyncio.to_thread(source)
        fresh = type(sink).from_config(raw).settings
    except SinkConfigError as err:
        _failed(log, str(err))
        return []
    except Exception as err:  # a source's own bug: its message may hold anything, so the type only
        _failed(log, f"the settings source failed ({type(err).__name__})")
        return []
    current = sink.settings
    changed = [key for key in sink.api_keys() if getattr(fresh, key) != getattr(current, key)]
    if not changed:
        return []
    old_api = sink.api
    sink.settings = msgspec.structs.replace(current, **{key: getattr(fresh, key) for key in changed})
    try:
        api = sink.make_api()
        await api.open()
    except Exception as err:  # a client that cannot be built from them: keep the one that ran
        sink.settings = current
        _failed(log, f"a new API client could not be built ({type(err).__name__})")
        return []
    sink.api = api
    # Calls under way on the old client (another event's, a webhook's) finish on it: closing it
    # now failed them as if the helpdesk were unreachable.
    _closing.add(task := asyncio.create_task(_close_when_idle(old_api, log), name="sink-old-api-close"))
    task.add_done_callback(_closing.discard)
    log.info(
        "sink.credentials_reloaded",
        changed=changed,
        action="the event waiting on refused credentials is tried again with the new settings",
    )
    return changed


_closing: set[asyncio.Task[None]] = set()  # held until done: a bare task may be collected


async def _close_when_idle(api: Any, log: Any) -> None:
    close = getattr(api, "close_when_idle", None) or api.close
    try:
        await close()
    except Exception as err:  # the old client only: the new one serves
        count_skip("sink.old_api_close")
        log.warning("sink.old_api_close_failed", error=type(err).__name__)


def _failed(log: Any, problem: str) -> None:
    count_skip("sink.credentials_reload")
    log.error(
        "sink.credentials_reload_failed",
        problem=problem,
        action="the sink keeps the settings it has; fix the config or secret file",
    )
