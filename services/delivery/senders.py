"""One delivery attempt per endpoint kind: an outcome, never an exception.

A sender never waits out a receiver's ``Retry-After`` itself: the outcome carries it
(``retry_after``) and the delivery service waits before the next attempt, without holding a
concurrency slot meanwhile (services.delivery.attempts).
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import aiohttp
import msgspec
from nats.js import JetStreamContext

from events.redact import scrub
from events.text import shorten
from services import tracing
from services.delivery import render, teams
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.signing import HEADER, sign
from services.delivery.slack_api import SlackApi
from services.delivery.slack_app import SlackApp
from services.delivery.slack_settings import SlackSettings

RETRYABLE_HTTP = frozenset({408, 425, 429})
DEFAULT_RETRY_AFTER = 1.0  # a 429 without a usable Retry-After still gets a pause
USER_AGENT = "Relaydesk-Delivery/1"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retryable: bool
    status_code: int | None = None
    error: str = ""
    ms: int = 0
    # Seconds the receiver asked to be left alone before the next attempt (a 429's, or a
    # 503's, ``Retry-After``); None when it did not say.
    retry_after: float | None = None


def _short(text: str, limit: int = 200) -> str:
    """One line, bounded, with addresses and phone numbers masked (it is logged and stored)."""
    text = scrub(" ".join(text.split()))
    return shorten(text, limit)


class Senders:
    def __init__(
        self,
        settings: DeliverySettings,
        *,
        slack: SlackSettings | None = None,
        js: JetStreamContext | None = None,
        message_days: int = 0,
    ) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        # Slack endpoints that name a channel post with the [slack] app's bot token (slack_app).
        self.slack = slack or SlackSettings()
        self.slack_app = (
            SlackApp(
                SlackApi(self.slack, self.http, max_wait=0.0), js, self.slack.slack_user_of, message_days=message_days
            )
            if js is not None
            else None
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout), headers={"User-Agent": USER_AGENT}
            )
        return self._http

    async def send(self, endpoint: Endpoint, delivery_id: str, body: dict[str, Any], endpoint_id: str = "") -> Outcome:
        started = time.monotonic()
        if endpoint.kind != "email":  # an email's subject goes to the agent's own mail only (README)
            body = {k: v for k, v in body.items() if k != "subject"}
        if endpoint.kind == "webhook":
            outcome = await self._webhook(endpoint, delivery_id, body)
        elif endpoint.slack_app:
            outcome = await self._slack_app(endpoint_id or endpoint.id or endpoint.channel, endpoint, body)
        elif endpoint.kind == "slack":
            outcome = await self._post(endpoint.url, msgspec.json.encode(render.slack(body)), {})
        elif endpoint.kind == "teams":
            # max_wait 0: the service waits out Retry-After, outside its concurrency slots.
            posted = await teams.post(self.http(), endpoint.url, body, max_wait=0.0)
            wait = _asked_wait(posted.status_code, posted.retry_after)
            outcome = Outcome(posted.ok, posted.retryable, posted.status_code, _short(posted.error), retry_after=wait)
        else:
            outcome = await self._email(endpoint, delivery_id, body)
        return Outcome(
            outcome.ok,
            outcome.retryable,
            outcome.status_code,
            outcome.error,
            int((time.monotonic() - started) * 1000),
            outcome.retry_after,
        )

    async def _webhook(self, endpoint: Endpoint, delivery_id: str, body: dict[str, Any]) -> Outcome:
        raw = msgspec.json.encode({"delivery_id": delivery_id, **body})
        headers = {
            HEADER: sign(endpoint.secret, raw),
            "X-Relaydesk-Delivery": delivery_id,
            "X-Relaydesk-Notice": str(body.get("notice", "")),
            # Tracing on: the tool that hears of the offer may continue its trace (W3C trace context).
            **(tracing.headers() or {}),
        }
        return await self._post(endpoint.url, raw, headers)

    async def _slack_app(self, endpoint_id: str, endpoint: Endpoint, body: dict[str, Any]) -> Outcome:
        if self.slack_app is None:
            return Outcome(False, False, None, "slack app endpoints need the delivery service's NATS connection")
        result = await self.slack_app.send(endpoint_id, endpoint, body)
        wait = _asked_wait(result.status_code, result.retry_after)
        return Outcome(result.ok, result.retryable, result.status_code, _short(result.error), retry_after=wait)

    async def _post(self, url: str, raw: bytes, headers: dict[str, str]) -> Outcome:
        try:
            async with self.http().post(url, data=raw, headers={"Content-Type": "application/json", **headers}) as r:
                text = await r.text(errors="replace")
                if 200 <= r.status < 300:
                    return Outcome(True, False, r.status)
                retryable = r.status >= 500 or r.status in RETRYABLE_HTTP
                # A 429 (Slack's incoming webhooks: "rate_limited") or a 503 may say when to
                # come back: the next attempt waits that long (up to backoff_max, the service).
                wait = _asked_wait(r.status, teams.retry_after_seconds(r.headers.get("Retry-After")))
                # Not the body: a receiver's refusal may quote what it refused (the notice's
                # preview, the customer's words), and this reason is logged and stored.
                error = f"HTTP {r.status} (a body of {len(text)} characters)"
                return Outcome(False, retryable, r.status, error, retry_after=wait)
        except TimeoutError:
            return Outcome(False, True, None, f"timed out after {self.settings.timeout:g} s")
        except aiohttp.ClientError as err:
            return Outcome(False, True, None, _short(f"{type(err).__name__}: {err}"))

    async def _email(self, endpoint: Endpoint, delivery_id: str, body: dict[str, Any]) -> Outcome:
        s = self.settings
        message = render.email(body, sender=s.smtp_from, to=endpoint.address, delivery_id=delivery_id)

        def send() -> None:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password)
                # Envelope sender: smtp_from, stated rather than read back from the headers. Not
                # the null sender: RFC 5321 4.5.5 wants a real one for notifications, and
                # submission services refuse <>. What comes back to it (bounces, responders
                # ignoring Auto-Submitted) the email connector knows as ours.
                smtp.send_message(message, from_addr=parseaddr(s.smtp_from)[1] or s.smtp_from)

        try:
            await asyncio.to_thread(send)
        except smtplib.SMTPResponseException as err:
            retryable = 400 <= err.smtp_code < 500
            detail = (
                err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
            )
            return Outcome(False, retryable, err.smtp_code, _short(f"SMTP {err.smtp_code}: {detail}"))
        except smtplib.SMTPRecipientsRefused as err:
            codes = sorted({code for code, _ in err.recipients.values()})
            retryable = all(400 <= code < 500 for code in codes)
            return Outcome(False, retryable, codes[0] if codes else None, f"SMTP recipient refused ({codes})")
        except (OSError, smtplib.SMTPException) as err:
            return Outcome(False, True, None, _short(f"{type(err).__name__}: {err}"))
        return Outcome(True, False, 250)


def _asked_wait(status: int | None, retry_after: float | None) -> float | None:
    """How long a refusal asked the next attempt to wait: a 429's ``Retry-After`` (a pause
    of ``DEFAULT_RETRY_AFTER`` when it gave none readable), a 503's when it gave one."""
    if status == 429:
        return retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
    if status == 503:
        return retry_after
    return None
