"""Bridging accepted calls: a follower of the log that connects the caller to the agent.

A connector never writes the log, but may read it. ``VoiceBridge`` reads ``rd.evt.c.>`` with a
durable pull consumer (``connector_voice_bridge``, new events only) and, for each
``OfferAccepted`` / ``ConversationAssigned`` of a voice conversation (the channel and the
CallSid come from the conversation's ``ConversationOpened``, read by a direct get), looks up
the agent's endpoint (her profile's ``voice``, else ``[connectors.voice] agents``; see
``endpoints``) and:

- while the call waits in the queue, redirects it through the Calls API
  (``POST /Accounts/{sid}/Calls/{CallSid}.json``, ``Twiml=<Dial>…``): the caller leaves the
  ``<Enqueue>`` and rings the agent's phone, SIP address or Twilio Client;
- when the call is over (the caller asked for a callback, left a voicemail or hung up; Twilio
  answers the update with error 21220 or 404), places a callback
  (``POST /Accounts/{sid}/Calls.json``): the agent's endpoint is called first, and when she
  answers, the customer is dialled from ``caller_id`` (or the number the customer called).

A transfer (a new ``OfferAccepted`` on the same conversation) redirects the live call to the
new agent the same way. A redirect refused with 429 (``Retry-After`` honoured, capped) or 5xx is
tried again a few times within ``dial_timeout``; if Twilio still refuses, the call is handed back
(``TwilioVoiceConnector.hand_back``: intake makes it wait again without that agent). Any other
failed bridge is logged and counted; the event is acked (the call may have moved on: retrying an
old bridge later would be wrong).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from connectors.sdk.deadletter import ensure_consumer
from connectors.sdk.retry_after import retry_after_seconds
from events import subjects
from events.codec import decode_log_event
from events.model import ConversationAssigned, ConversationOpened, OfferAccepted
from events.personal import CustomerKeys, PersonalDataCipher
from events.pull import Puller
from events.skips import count_skip, skipping
from events.stopping import cancel_and_wait

from . import twiml
from .endpoints import AgentEndpoints

if TYPE_CHECKING:
    from .connector import TwilioVoiceConnector

log = structlog.get_logger("relaydesk.connector.voice.bridge")

DURABLE = "connector_voice_bridge"
# Twilio: "Call is not in-progress. Cannot redirect."
NOT_IN_PROGRESS = 21220
# A redirect Twilio refused for a while (429, 5xx, no answer) is tried again, within the dial
# timeout, at most this often; Retry-After is honoured up to MAX_RETRY_AFTER seconds.
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 5.0
# The bridge consumer's ack wait (s).
ACK_WAIT_S = 60.0


class VoiceBridge:
    def __init__(self, connector: TwilioVoiceConnector, nc: NATS, *, fetch_timeout: float = 1.0) -> None:
        self.connector = connector
        self.nc = nc
        self.js = nc.jetstream()
        self.cipher = PersonalDataCipher(CustomerKeys(self.js), sealing=False)
        self.fetch_timeout = fetch_timeout
        self.endpoints = AgentEndpoints(nc, connector.settings.agents)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="voice-bridge")
        # Subscribed before the connector serves: an accept right after the first call is seen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _subscribe(self) -> Puller:
        config = ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=subjects.CUSTOMER_EVENTS_ALL,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,  # calls from before the first start are long over
            ack_wait=ACK_WAIT_S,
            max_ack_pending=1000,
        )
        await ensure_consumer(self.js, subjects.EVENTS_STREAM, config)
        # Messages as soon as there are any: voice connector processes share the durable
        # (events.pull).
        return await Puller(self.nc, subjects.EVENTS_STREAM, DURABLE).start()

    async def _run(self) -> None:
        sub: Puller | None = None
        pause = 0.2
        while True:
            try:
                if sub is None:
                    sub = await self._subscribe()
                    self._ready.set()
                msgs = await sub.fetch(100, self.fetch_timeout)
                if msgs:
                    await self._handle_batch(msgs)
                pause = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("voice.bridge_fetch_failed", error=type(err).__name__, detail=str(err)[:200])
                count_skip("voice.bridge_fetch")
                if sub is not None:  # a fresh subscription follows; the old one may be gone already
                    with skipping("voice.bridge_unsubscribe", durable=DURABLE):
                        await sub.unsubscribe()
                sub = None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Each event in turn, every one not yet acked kept ours meanwhile: a bridge may take
        ``dial_timeout`` and more, and an event past its ack wait went to the other voice
        process, which bridged the same call again (a second redirect, a second callback)."""
        waiting = list(msgs)
        keeper = asyncio.create_task(_keep_in_progress(waiting, ACK_WAIT_S / 3), name="voice-bridge-in-progress")
        try:
            for msg in msgs:
                await self._handle(msg.subject, msg.data)
                waiting.remove(msg)
                await msg.ack()
        finally:
            await cancel_and_wait(keeper)

    async def _handle(self, subject: str, data: bytes) -> None:
        event = decode_log_event(data, subject=subject)
        if isinstance(event, ConversationAssigned) and event.channel != "voice":
            return
        if not isinstance(event, OfferAccepted | ConversationAssigned):
            return
        opened = await self._opening(subject)
        if opened is None or opened.channel != "voice":
            return
        blog = log.bind(conversation_id=event.conversation_id, agent_id=event.agent_id)
        try:
            await self.bridge(opened, event.agent_id, blog)
        except (aiohttp.ClientError, TimeoutError) as err:
            blog.error("voice.bridge_failed", error=type(err).__name__)
            self.connector.metrics.inc("delivery_failed")

    async def _opening(self, subject: str) -> ConversationOpened | None:
        try:
            raw = await self.js.get_msg(subjects.EVENTS_STREAM, seq=1, subject=subject, next=True, direct=True)
        except Exception as err:
            log.warning("voice.opening_unread", error=type(err).__name__, nats_subject=subject)
            count_skip("voice.bridge_opening")
            return None
        event = decode_log_event(raw.data or b"", subject=subject)
        return event if isinstance(event, ConversationOpened) else None

    # -- the Calls API ------------------------------------------------------------------

    async def bridge(self, opened: ConversationOpened, agent_id: str, blog: Any) -> None:
        s = self.connector.settings
        endpoint = await self.endpoints.endpoint(agent_id)
        if not endpoint:
            hint = f"PATCH /v1/agents/{agent_id} with voice, or set [connectors.voice] agents.{agent_id}"
            blog.error("voice.no_agent_endpoint", hint=hint)
            self.connector.metrics.inc("delivery_failed")
            return
        call_sid = opened.provider_message_id
        # The agent rung rides on the <Dial> action: if she does not answer, the status webhook
        # names her, and intake hands the call back without her.
        document = twiml.dial(
            endpoint,
            timeout=s.dial_timeout,
            action=self.connector.url("/twilio/voice/status") + "?" + urlencode({"agent": agent_id}),
            message="Connecting you to an agent.",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(float(s.dial_timeout), 1.0)
        attempt = 0
        while True:
            attempt += 1
            try:
                status, body, retry_after = await self._post_once(f"Calls/{call_sid}.json", {"Twiml": document})
            except (aiohttp.ClientError, TimeoutError) as err:
                status, body, retry_after = 0, {"error": type(err).__name__}, None
            if status in (200, 201):
                blog.info("voice.bridged", call_sid=call_sid, attempts=attempt)
                self.connector.metrics.inc("delivered")
                return
            if status == 404 or body.get("code") == NOT_IN_PROGRESS:
                await self.call_back(opened, endpoint, blog)
                return
            transient = status == 0 or status == 429 or status >= 500
            pause = _pause(attempt, retry_after)
            if not transient or attempt >= MAX_ATTEMPTS or loop.time() + pause > deadline:
                break
            blog.warning("voice.bridge_retry", call_sid=call_sid, status=status, code=body.get("code"), pause=pause)
            await asyncio.sleep(pause)
        blog.error("voice.bridge_refused", call_sid=call_sid, status=status, code=body.get("code"), attempts=attempt)
        self.connector.metrics.inc("delivery_failed")
        if transient:
            # Twilio kept refusing: the call goes back to the router (without this agent), not
            # left on hold until the wait limit (found by an audit).
            opened = await self.cipher.open(opened)
            reason = f"Calls API {status or 'unreachable'}"
            await self.connector.hand_back(call_sid, opened.contact, "", agent_id, reason)

    async def call_back(self, opened: ConversationOpened, endpoint: str, blog: Any) -> None:
        """The caller is gone: ring the agent, then dial the customer once she answers."""
        s = self.connector.settings
        opened = await self.cipher.open(opened)
        caller_id = s.caller_id
        if not caller_id:
            blog.error("voice.callback_impossible", hint="set [connectors.voice] caller_id")
            self.connector.metrics.inc("delivery_failed")
            return
        document = twiml.dial(
            opened.contact, timeout=s.dial_timeout * 2, caller_id=caller_id, message="Calling the customer back."
        )
        to = endpoint if endpoint.lower().startswith(("client:", "sip:", "sips:")) else endpoint.removeprefix("tel:")
        # No StatusCallback: its From would be our own number, not the customer's.
        form = {"To": to, "From": caller_id, "Twiml": document}
        status, body = await self._post("Calls.json", form)
        if status in (200, 201):
            blog.info("voice.callback_placed", call_sid=body.get("sid"))
            self.connector.metrics.inc("delivered")
        else:
            blog.error("voice.callback_refused", status=status, code=body.get("code"))
            self.connector.metrics.inc("delivery_failed")

    async def _post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body, _ = await self._post_once(path, form)
        return status, body

    async def _post_once(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any], str | None]:
        s = self.connector.settings
        url = f"{s.api_base_url.rstrip('/')}/2010-04-01/Accounts/{s.account_sid}/{path}"
        credentials = base64.b64encode(f"{s.account_sid}:{s.auth_token}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
        async with self.connector.http.post(url, data=form, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = {}
        return status, data if isinstance(data, dict) else {}, retry_after


def _pause(attempt: int, retry_after: str | None) -> float:
    """Before another try: Twilio's ``Retry-After`` (seconds) when it gives one, capped; else backoff."""
    if (seconds := retry_after_seconds(retry_after)) is not None:
        return min(seconds, MAX_RETRY_AFTER)
    return min(0.25 * 2 ** (attempt - 1), MAX_RETRY_AFTER)


async def _keep_in_progress(waiting: list[Msg], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for msg in list(waiting):
            with skipping("voice.bridge_in_progress", durable=DURABLE):
                await msg.in_progress()
