"""A one-shot tool's connection to NATS (``customers``, ``dlq``, ``rebuild``, ``status``): a
few quick tries within a bound, said while it waits, and a failure said once, in words.

Bounded by three times ``[nats] connect_timeout`` (RELAYDESK_NATS_CONNECT_TIMEOUT; 5 s, so 15 s),
as a service's first connection is (``services.bus.connection.connect_nats``). Before, tools
ignored the setting and tried 4 times with 5 s each: a server that never answered kept them
silent 26 s."""

from __future__ import annotations

import asyncio
import time

import nats
import structlog
from nats.aio.client import Client as NATS

from services.bus.auth import NatsAuth, describe_servers, server_list
from services.bus.connection import is_credentials_error, is_permission_error, keep_denials, why_unreachable
from services.bus.waiting import said_while_connecting
from services.config import ConfigError

log = structlog.get_logger(__name__)


class CredentialsRefused(nats.errors.Error):
    """NATS refused this login (a wrong password, another role's): trying again will not help."""


# Tries after the first within the bound: a NATS restarting is waited for a moment.
RETRIES = 3


async def connect_tool(url: str, auth: NatsAuth, *, timeout: float = 5.0) -> NATS:
    """Connected as ``auth``, or ``nats.errors.Error`` saying why (every tool puts "cannot
    connect to NATS at <url>: " before it): the credentials refused, or the last attempt's
    failure, how many tries and what to do."""
    refused: list[str] = []
    denied: list[str] = []
    failures: list[str] = []  # why each attempt failed: the last is said, not "no servers available"

    async def error_cb(err: Exception) -> None:
        if is_permission_error(err):
            denied.append(str(err))
            del denied[:-10]
            log.error("nats.permission_denied", error=str(err), who=auth.describe())
            return
        if is_credentials_error(err):
            refused.append(str(err))
        failures.append(why_unreachable(err))
        log.debug("nats.error", error=str(err))

    try:
        servers = server_list(url)
    except ConfigError as err:
        raise SystemExit(f"relaydesk: {err}") from err
    budget = timeout * 3
    started = time.monotonic()
    connecting = nats.connect(
        servers,
        connect_timeout=timeout,
        max_reconnect_attempts=RETRIES,
        reconnect_time_wait=min(2.0, timeout),
        error_cb=error_cb,
        **auth.connect_options(),
    )
    try:
        async with said_while_connecting(describe_servers(servers), budget, timeout, failures):
            nc = await asyncio.wait_for(connecting, budget)
    except (nats.errors.NoServersError, TimeoutError) as err:
        if refused:
            raise CredentialsRefused(
                f"NATS refused the credentials ({auth.describe()}): set [nats] user and RELAYDESK_NATS_PASSWORD, "
                "or run where `relaydesk up` keeps its data dir (RELAYDESK_DATA_DIR)"
            ) from err
        why = failures[-1] if failures else why_unreachable(TimeoutError())
        tries = max(1, len(failures))
        raise nats.errors.Error(
            f"{why} (tried {tries} time{'s' if tries > 1 else ''} in {time.monotonic() - started:.0f} s; "
            f"at most 3 x [nats] connect_timeout = {budget:g} s); is NATS running there? "
            "Set RELAYDESK_NATS_URL or --nats-url, or run beside `relaydesk up`"
        ) from err
    keep_denials(nc, denied)
    return nc
