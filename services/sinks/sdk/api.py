"""The helpdesk API client a sink calls through: retries, 429 Retry-After, auth errors.

``ProviderApi.call`` sends one request and returns the decoded JSON body. It retries
timeouts, connection errors and 5xx with exponential backoff and jitter, waits out a 429 for
as long as its ``Retry-After`` says (capped by ``max_retry_after``), and raises:

- ``AuthFailed`` on 401/403 (not retried here: the runtime waits on the event, trying it again
  every ``auth_retry_pause`` seconds, until an operator fixes the credentials),
- ``Rejected`` on any other 4xx (the request is wrong; retrying cannot help),
- ``Transient`` once the attempts are spent (the caller tries the whole event again later).

A write that is not idempotent (a comment, a note) is sent with ``retry=False``: after a
timeout, a connection error or a 5xx the helpdesk may have stored it all the same, so it is not
sent again blind; ``Transient`` is raised at once and the sink, trying the event again, looks
for the comment before posting (``Sink`` authors: see ``SinkState.posting``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from connectors.sdk.retry_after import retry_after_seconds as connector_retry_after
from events.redact import scrub

from .errors import AuthFailed, Rejected, Transient
from .metrics import SINK_API_CALLS, SINK_AUTH_FAILURES, SINK_RATE_LIMITED

log = structlog.get_logger("relaydesk.sink")


def retry_after_seconds(
    value: str | None, default: float, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); ``default`` when absent or
    unreadable."""
    found = connector_retry_after(value, now)
    return default if found is None else found


class ProviderApi:
    """One helpdesk's API: ``base_url``, an ``Authorization`` header, a session of its own."""

    def __init__(
        self,
        sink: str,
        base_url: str,
        authorization: str,
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 15.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.base_url = base_url.rstrip("/")
        self.authorization = authorization
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._http: aiohttp.ClientSession | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.log = log.bind(sink=sink)

    async def open(self) -> None:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def close_when_idle(self) -> None:
        """Close once no call is under way (a client replaced by new credentials: a call still
        in its retries keeps the session it runs on), or once the longest call could have
        ended (every attempt timing out, every pause waited)."""
        longest = self.attempts * (self.timeout + self.max_retry_after)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=longest)
        except TimeoutError:
            self.log.warning("sink.api_closed_busy", in_flight=self._in_flight, waited_s=longest)
        await self.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
        forbidden: str = "",
    ) -> Any:
        """The JSON answer of ``method path`` (None for an empty body); see the module docstring.
        ``forbidden``: the right a 403 to this call means the API user lacks (a delete the
        helpdesk lets only some roles do); the 403 is then a refusal (``Rejected``, the event is
        parked, the reason names the right) and not a credentials failure."""
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._call(
                method, path, json=json, params=params, headers=headers, retry=retry, forbidden=forbidden
            )
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        retry: bool,
        forbidden: str = "",
    ) -> Any:
        await self.open()
        assert self._http is not None
        url = self.base_url + path
        sent = {"Authorization": self.authorization, "Accept": "application/json", **(headers or {})}
        reason = "not attempted"
        for attempt in range(1, self.attempts + 1):
            wait = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            try:
                async with self._http.request(method, url, json=json, params=params, headers=sent) as resp:
                    status = resp.status
                    SINK_API_CALLS.labels(sink=self.sink, status=str(status)).inc()
                    body = await resp.read()
                    if status < 300:
                        return _json(body)
                    if status == 429:
                        SINK_RATE_LIMITED.labels(sink=self.sink).inc()
                        wait = min(self.max_retry_after, retry_after_seconds(resp.headers.get("Retry-After"), wait))
                        reason = f"{method} {path}: rate limited (429)"
                        self.log.warning("sink.rate_limited", path=path, retry_after_s=round(wait, 2), attempt=attempt)
                    elif status == 403 and forbidden:
                        raise Rejected(f"{method} {path}: forbidden (403): {forbidden}", http_status=403)
                    elif status in (401, 403):
                        SINK_AUTH_FAILURES.labels(sink=self.sink).inc()
                        self.log.error(
                            "sink.auth_failed",
                            path=path,
                            status=status,
                            action="check the sink's API credentials; the sink waits on this event until then",
                        )
                        raise AuthFailed(
                            f"{method} {path}: the helpdesk refused our credentials ({status})", http_status=status
                        )
                    elif 400 <= status < 500 and status != 408:
                        raise Rejected(f"{method} {path}: refused ({status}) {_short(body)}", http_status=status)
                    else:
                        reason = f"{method} {path}: helpdesk error ({status})"
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                # The exception text may carry the URL (a token in it): keep the type only.
                SINK_API_CALLS.labels(sink=self.sink, status="error").inc()
                reason = f"{method} {path}: helpdesk unreachable ({type(err).__name__})"
            if not retry and not reason.endswith("(429)"):
                # A timeout or 5xx: the request may have been carried out; not sent twice blind.
                raise Transient(f"{reason} (not retried: the helpdesk may have stored it)")
            if attempt < self.attempts:
                self.log.info("sink.api_retry", path=path, attempt=attempt, wait_s=round(wait, 2), reason=reason)
                await self._sleep(wait)
        raise Transient(f"{reason} (after {self.attempts} attempts)")


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    import json

    try:
        return json.loads(body)
    except ValueError as err:
        raise Transient("the helpdesk answered success with a body that is not JSON") from err


def _short(body: bytes, limit: int = 200) -> str:
    """The start of an error body for the reason (providers put the cause there), with phone
    numbers and email addresses masked: the reason is logged and parked."""
    return scrub(body[:limit].decode("utf-8", errors="replace").replace("\n", " "))
