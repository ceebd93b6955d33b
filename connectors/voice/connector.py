"""The Twilio Voice connector: calls become conversations on the ``voice`` channel.

Webhooks (form-encoded, ``X-Twilio-Signature`` checked like SMS, every one answered with TwiML):

- ``POST /twilio/voice`` (the number's "A call comes in" URL): the greeting, and the language
  menu (``<Gather numDigits=1>``) when ``languages`` names more than one;
- ``POST /twilio/voice/queue``: the caller chose (or the menu timed out): the call is
  published on ``rd.inbound.voice`` (an ``InboundMessage``, ``provider_message_id`` = CallSid,
  metadata ``kind=call``, ``call_sid``, ``language``), so intake opens a conversation and the
  router offers it; only once JetStream acknowledged it the caller is put in the queue
  (``<Enqueue>``, hold music from ``/twilio/voice/wait``);
- ``POST /twilio/voice/wait``: one round of hold music; past ``wait_limit_seconds`` the caller
  leaves the queue (``<Leave/>``) and ``/twilio/voice/left`` offers a callback (press 1,
  ``kind=callback_request``) or a voicemail (``<Record>``: ``kind=voicemail`` with the recording
  as an attachment, then ``kind=transcript`` with Twilio's transcription when it comes);
- ``POST /twilio/voice/status`` (call status callback, and the bridge's ``<Dial>`` action):
  ``kind=call_status`` messages ("Call completed (125 s)"), recorded on the open conversation's
  timeline and never opening one (``auto=1``). The agent's leg completed: ``resolves=1``; it
  ended otherwise (the ``<Dial>`` action names the agent, ``?agent=``): ``releases=<agent>``, so
  intake hands the call back without her; the caller's own call ended: ``ends_call=1`` (intake
  resolves the conversation unless a callback or a voicemail keeps it open).

Accepted calls are bridged by ``connectors.voice.bridge.VoiceBridge``. Replies typed into a
voice conversation are refused (``deliver``): the call is the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import parse_qs

import phonenumbers
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from connectors.sdk import Connector, ConnectorSettings, DeliveryResult, Malformed, ProviderRequest, Route
from connectors.sms import twilio
from connectors.sms.twilio import form as _form
from events.model import Attachment, DeliverReply, InboundMessage

from . import twiml
from .settings import VoiceSettings

log = structlog.get_logger("relaydesk.connector.voice")

PATH = "/twilio/voice"
QUEUE_PATH = f"{PATH}/queue"
WAIT_PATH = f"{PATH}/wait"
LEFT_PATH = f"{PATH}/left"
AFTER_WAIT_PATH = f"{PATH}/after"
RECORDED_PATH = f"{PATH}/recorded"
TRANSCRIBED_PATH = f"{PATH}/transcribed"
STATUS_PATH = f"{PATH}/status"
# Statuses Twilio reports for a call or a <Dial> (CallStatus / DialCallStatus).
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


class TwilioVoiceConnector(Connector):
    name: ClassVar[str] = "voice"
    channel: ClassVar[str] = "voice"
    provider: ClassVar[str] = "twilio"
    Settings: ClassVar[type[ConnectorSettings]] = VoiceSettings

    settings: VoiceSettings

    def __init__(self, settings: ConnectorSettings) -> None:
        if not isinstance(settings, VoiceSettings):
            raise TypeError("TwilioVoiceConnector needs VoiceSettings")
        super().__init__(settings)
        self.bridge: object | None = None

    def routes(self) -> list[Route]:
        return [
            Route("POST", PATH, handler=self.on_call),
            Route("POST", QUEUE_PATH, handler=self.on_queue),
            Route("POST", WAIT_PATH, handler=self.on_wait),
            Route("POST", LEFT_PATH, handler=self.on_left),
            Route("POST", AFTER_WAIT_PATH, handler=self.on_after_wait),
            Route("POST", RECORDED_PATH, handler=self.on_recorded),
            Route("POST", TRANSCRIBED_PATH, handler=self.on_transcribed),
            Route("POST", STATUS_PATH, handler=self.on_status),
        ]

    async def startup(self) -> None:
        if not self.settings.auth_token:
            log.warning("voice.no_auth_token", hint="set [connectors.voice] auth_token; every webhook gets 403")
        if self.settings.bridge:
            from .bridge import VoiceBridge

            bridge = VoiceBridge(self, self.nc)
            await bridge.start()
            self.bridge = bridge

    async def shutdown(self) -> None:
        bridge = self.bridge
        self.bridge = None
        if bridge is not None:
            from .bridge import VoiceBridge

            assert isinstance(bridge, VoiceBridge)
            await bridge.stop()

    # -- signatures (as SMS) ----------------------------------------------------------

    def url(self, path: str) -> str:
        """A link for TwiML: absolute under ``public_base_url``, else relative (Twilio resolves it)."""
        return self.settings.public_base_url.rstrip("/") + path

    def public_url(self, request: ProviderRequest) -> str:
        return twilio.public_url(self.settings, request)

    def verify(self, request: ProviderRequest) -> None:
        # Voice webhooks are form-encoded: no ``bodySHA256`` check.
        twilio.verify(self.settings, request, "voice", body_hash=False)

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        """The call itself (what ``/twilio/voice/queue`` publishes)."""
        form = _form(request)
        return [self._message(form, "call", _call_sid(form), language=self.language_of(form.get("Digits", "")))]

    # -- the call flow ------------------------------------------------------------------

    def language_of(self, digits: str) -> str:
        return self.settings.languages.get(digits.strip()[:1], self.settings.default_language)

    async def on_call(self, request: ProviderRequest) -> web.StreamResponse:
        form = _form(request)
        call_sid = _call_sid(form)
        s = self.settings
        if not _is_phone_number(form.get("From") or form.get("Caller") or ""):
            # Intake records a call by the caller's number: without one the caller would hold
            # in the queue for an agent who is never put through.
            log.info("voice.withheld_caller", call_sid=call_sid)
            self.metrics.inc("rejected")
            return _xml(twiml.goodbye(s.withheld_message))
        if len(s.languages) > 1:
            return _xml(twiml.greeting_menu(s.greeting, s.menu_prompt, self.url(QUEUE_PATH)))
        return await self._enqueue(form, greeting=s.greeting)

    async def on_queue(self, request: ProviderRequest) -> web.StreamResponse:
        return await self._enqueue(_form(request))

    async def _enqueue(self, form: MultiDictProxy[str], greeting: str = "") -> web.StreamResponse:
        message = self._message(form, "call", _call_sid(form), language=self.language_of(form.get("Digits", "")))
        # The caller is queued only once the conversation is safe in JetStream (else 503: Twilio
        # plays its fallback URL); a retried webhook is one event (Nats-Msg-Id = voice:<CallSid>).
        await self._publish(message)
        s = self.settings
        language = message.metadata["language"]
        return _xml(twiml.enqueue(s.queue_name, self.url(WAIT_PATH), self.url(LEFT_PATH), greeting, language))

    async def on_wait(self, request: ProviderRequest) -> web.StreamResponse:
        form = _form(request)
        try:
            waited = float(form.get("QueueTime") or "0")
        except ValueError as err:
            raise Malformed("QueueTime is not a number") from err
        if self.settings.wait_limit_seconds > 0 and waited >= self.settings.wait_limit_seconds:
            return _xml(twiml.leave_queue())
        return _xml(twiml.hold(self.settings.hold_music_url))

    async def on_left(self, request: ProviderRequest) -> web.StreamResponse:
        """The ``<Enqueue>`` action: the caller left the queue. ``leave``: the wait limit passed
        (callback or voicemail); ``hangup``: the caller hung up waiting, so the conversation is
        resolved (abandoned; found by an audit: it stayed waiting and the router would offer a
        dead call); ``bridged``/...: nothing more to say."""
        form = _form(request)
        result = form.get("QueueResult")
        if result == "hangup":
            call_sid = _call_sid(form)
            # Its own status in the id (not the caller leg's "completed", which comes too and
            # must not be taken for a duplicate of this one): reports read caller legs by it.
            extra = {"call_status": "abandoned", "leg": "caller", "resolves": "1"}
            text = "Caller hung up in the queue" + (f" ({form['QueueTime']} s)" if form.get("QueueTime") else "")
            leg_id = f"{call_sid}:call:abandoned"
            message = self._message(form, "call_status", leg_id, text=text, auto=True, extra=extra)
            await self._publish(message)
            log.info("voice.abandoned", call_sid=call_sid, queue_time=form.get("QueueTime") or None)
        if result != "leave":
            return _xml(twiml.response())
        return _xml(twiml.after_wait_menu(self.settings.after_wait_prompt, self.url(AFTER_WAIT_PATH)))

    async def on_after_wait(self, request: ProviderRequest) -> web.StreamResponse:
        form = _form(request)
        call_sid = _call_sid(form)
        s = self.settings
        if form.get("Digits", "").strip() == "1":
            await self._publish(
                self._message(form, "callback_request", f"{call_sid}:callback", text="Callback requested")
            )
            return _xml(twiml.goodbye(s.callback_message))
        return _xml(twiml.record("", self.url(RECORDED_PATH), self.url(TRANSCRIBED_PATH), s.max_voicemail_seconds))

    async def on_recorded(self, request: ProviderRequest) -> web.StreamResponse:
        form = _form(request)
        recording = form.get("RecordingUrl", "").strip()
        if recording:
            sid = form.get("RecordingSid") or f"{_call_sid(form)}:voicemail"
            attachment = Attachment(url=recording, content_type="audio/x-wav", name="voicemail.wav")
            extra = {"recording_duration": form.get("RecordingDuration", "")}
            message = self._message(form, "voicemail", sid, text="Voicemail", attachments=(attachment,), extra=extra)
            await self._publish(message)
        return _xml(twiml.goodbye(self.settings.voicemail_message))

    async def on_transcribed(self, request: ProviderRequest) -> web.StreamResponse:
        form = _form(request)
        text = form.get("TranscriptionText", "")
        if form.get("TranscriptionStatus", "completed") == "completed" and text:
            sid = form.get("TranscriptionSid") or f"{_call_sid(form)}:transcript"
            await self._publish(self._message(form, "transcript", sid, text=text, auto=True))
        return _xml(twiml.response())

    async def on_status(self, request: ProviderRequest) -> web.StreamResponse:
        """Call status callbacks and the bridge's ``<Dial>`` action: a fact on the timeline."""
        form = _form(request)
        call_sid = _call_sid(form)
        dial = bool(form.get("DialCallStatus"))
        status = (form.get("DialCallStatus") or form.get("CallStatus") or "").strip()
        if not status:
            raise Malformed("CallStatus is missing")
        duration = (form.get("DialCallDuration") or form.get("CallDuration") or "").strip()
        text = f"Call {status.replace('-', ' ')}" + (f" ({duration} s)" if duration else "")
        # Leg and status in the id, which the log keeps in clear (metadata values are sealed):
        # services.reports.voice reads them from here. Keep the format.
        agent = _query(request, "agent") if dial else ""
        # The agent rung in the id too: a second agent's "no-answer" on the same call is not a
        # duplicate of the first's (services.reports.voice reads the last two parts only).
        sid = f"{call_sid}{'~' + agent if agent else ''}:{'dial' if dial else 'call'}:{status}"
        extra = {"call_status": status, "duration": duration, "leg": "agent" if dial else "caller"}
        if dial and status == "completed":
            extra["resolves"] = "1"  # the agent talked to the caller and the call ended: done
        elif dial and status in FINAL_STATUSES and agent:
            # She did not answer (busy, failed, canceled): intake hands the call back, without
            # her, while she still holds it (found by an audit: it stayed hers for ever).
            extra["releases"] = agent
        elif not dial and status in FINAL_STATUSES:
            # The caller's call is over: unless an agent talked to them (resolved already) or
            # they asked for a callback or left a voicemail, nobody is left to put through.
            extra["ends_call"] = "1"
        message = self._message(form, "call_status", sid, text=text, auto=True, extra=extra)
        await self._publish(message)
        # Several per call (each leg's ringing, answer, end), each a message published: at debug,
        # as inbound.published is (the timeline and relaydesk_connector_published_total keep it).
        log.debug(
            "voice.status", call_sid=call_sid, status=status, duration=duration or None, leg=message.metadata["leg"]
        )
        if dial and status != "completed":
            # The agent did not pick up: the caller waits in the queue again.
            return _xml(twiml.enqueue(self.settings.queue_name, self.url(WAIT_PATH), self.url(LEFT_PATH)))
        return _xml(twiml.response())

    async def hand_back(self, call_sid: str, caller: str, called: str, agent_id: str, reason: str) -> None:
        """The bridge could not put the call through to ``agent_id``: the same hand-back as her
        not answering (``releases``), so the router offers the call to someone else."""
        metadata = {"kind": "call_status", "call_sid": call_sid, "platform": "voice", "auto": "1"}
        metadata.update({"call_status": "failed", "leg": "agent", "releases": agent_id})
        if called:
            metadata["from"] = called
        message = InboundMessage(
            at=self.now(),
            channel="voice",
            provider="twilio",
            # Not "<CallSid>:dial:<status>": no leg of the agent's was ever placed.
            provider_message_id=f"{call_sid}~{agent_id}:bridge:{self.now().timestamp():.0f}",
            sender=caller,
            recipient=called,
            text=f"Call not put through to the agent ({reason})",
            metadata=metadata,
        )
        await self._publish(message)

    # -- publishing ---------------------------------------------------------------------

    def _message(
        self,
        form: MultiDictProxy[str],
        kind: str,
        provider_message_id: str,
        *,
        text: str = "",
        language: str = "",
        attachments: tuple[Attachment, ...] = (),
        auto: bool = False,
        extra: dict[str, str] | None = None,
    ) -> InboundMessage:
        caller = (form.get("From") or form.get("Caller") or "").strip()
        if not caller:
            raise Malformed("From is missing")
        called = (form.get("To") or form.get("Called") or "").strip()
        metadata = {"kind": kind, "call_sid": _call_sid(form), "platform": "voice"}
        if language:
            metadata["language"] = language
        if called:
            metadata["from"] = called  # the number a callback is placed from
        if auto:
            metadata["auto"] = "1"  # a fact about a call, never a conversation of its own
        metadata.update({key: value for key, value in (extra or {}).items() if value})
        return InboundMessage(
            at=self.now(),
            channel="voice",
            provider="twilio",
            provider_message_id=provider_message_id,
            sender=caller,
            recipient=called,
            text=text,
            attachments=attachments,
            metadata=metadata,
        )

    async def _publish(self, message: InboundMessage) -> None:
        for item in await self.publisher.publish([message]):
            self.metrics.inc("duplicates" if item.duplicate else "published")

    # -- outbound -------------------------------------------------------------------------

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        return DeliveryResult.failed("a voice conversation is answered on the call: text replies are not sent")


def _is_phone_number(caller: str) -> bool:
    """A number intake can know the caller by (as ``services.identity.addresses.normalise_phone``
    takes it): not "anonymous", a withheld number's stand-in, or a ``client:`` identity."""
    try:
        number = phonenumbers.parse(caller.strip(), None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(number)


def _query(request: ProviderRequest, name: str) -> str:
    """A parameter of the webhook's own URL (the bridge names the agent rung in the ``<Dial>`` action)."""
    query = request.raw_path.partition("?")[2]
    value = parse_qs(query).get(name, [""])[0].strip()
    return value if len(value) <= 200 and value.isprintable() else ""


def _call_sid(form: MultiDictProxy[str]) -> str:
    sid = form.get("CallSid", "").strip()
    # ASCII only: str.isalnum alone takes "CA١٢٣"; the sid names a NATS message id and KV keys.
    if not sid.startswith("CA") or not (sid[2:].isascii() and sid[2:].isalnum()) or len(sid) > 64:
        raise Malformed("CallSid is missing or not a Twilio call sid")
    return sid


def _xml(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml", charset="utf-8")
