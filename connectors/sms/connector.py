"""The Twilio SMS connector.

Inbound: ``POST /twilio/sms`` (Twilio's form-encoded webhook, checked against
``X-Twilio-Signature``), answered with empty TwiML once JetStream acknowledged the message.
Status callbacks on ``POST /twilio/status`` are verified and logged (failures as warnings,
the rest at debug). Outbound: replies on ``rd.out.sms`` go through
``POST {api_base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``.

Settings (``[connectors.sms]``; ``RELAYDESK_TWILIO_AUTH_TOKEN`` sets ``auth_token``)::

    host = "127.0.0.1"            port = 8081
    auth_token = ""               # Twilio auth token: checks inbound signatures, authenticates outbound
    extra_auth_tokens = []        # also accepted on webhooks, never sent: the other token while rotating
    public_base_url = ""          # e.g. "https://relay.example.com" behind a proxy; "" = URL as received
    account_sid = ""              # outbound: the account sending replies
    from_number = ""              # outbound: From (or set messaging_service_sid)
    messaging_service_sid = ""
    status_callback_url = ""      # outbound: StatusCallback sent to Twilio, if set
    signing_key_secret = ""       # secret for SharedKey-signed webhooks (HMAC_SHA256); "" = auth_token
    api_base_url = "https://api.twilio.com"
    ack_timeout = 5.0             max_body_bytes = 65536    (plus every ConnectorSettings key)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlencode

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from connectors.sdk import (
    Connector,
    ConnectorSettings,
    DeliveryResult,
    Malformed,
    ProviderRequest,
    Route,
    text_limits,
)
from connectors.sdk.reply_command import template_values
from connectors.sdk.retry_after import retry_after_seconds
from events.model import Attachment, Channel, DeliverReply, InboundMessage, ReplyOutcomeReported

from . import twilio
from .twilio import TwilioSettings

log = structlog.get_logger("relaydesk.connector.sms")

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_TWIML_EMPTY_BYTES = TWIML_EMPTY.encode()
_SID = re.compile(r"^[A-Za-z]{2}[A-Za-z0-9]{1,62}$")
MAX_MEDIA = 10
_FAILED_STATUSES = frozenset({"failed", "undelivered"})
# Form fields kept as metadata (no location fields: they describe the customer).
_METADATA = {
    "AccountSid": "account_sid",
    "MessagingServiceSid": "messaging_service_sid",
    "NumSegments": "num_segments",
    "NumMedia": "num_media",
    "SmsStatus": "sms_status",
    "ApiVersion": "api_version",
    "FromCountry": "from_country",
    "ToCountry": "to_country",
}


class TwilioSmsSettings(TwilioSettings, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8081
    max_body_bytes: int = 64 * 1024
    from_number: str = ""
    messaging_service_sid: str = ""
    status_callback_url: str = ""


class TwilioSmsConnector(Connector):
    name: ClassVar[str] = "sms"
    channel: ClassVar[Channel] = "sms"
    provider: ClassVar[str] = "twilio"
    Settings: ClassVar[type[ConnectorSettings]] = TwilioSmsSettings
    inbound_paths: ClassVar[tuple[str, ...]] = ("/twilio/sms",)

    settings: TwilioSmsSettings

    def __init__(self, settings: ConnectorSettings) -> None:
        if not isinstance(settings, TwilioSmsSettings):
            raise TypeError("TwilioSmsConnector needs TwilioSmsSettings")
        super().__init__(settings)

    def routes(self) -> list[Route]:
        return [*super().routes(), Route("POST", "/twilio/status", handler=self.on_status)]

    async def startup(self) -> None:
        if not self.settings.auth_token:
            log.warning("sms.no_auth_token", hint="set RELAYDESK_TWILIO_AUTH_TOKEN; every webhook gets 403")

    # -- inbound ------------------------------------------------------------------------

    def public_url(self, request: ProviderRequest) -> str:
        """The URL Twilio called: ``public_base_url`` + path and query, else as received."""
        return twilio.public_url(self.settings, request)

    def verify(self, request: ProviderRequest) -> None:
        twilio.verify(self.settings, request, "sms")

    def _form(self, request: ProviderRequest) -> MultiDictProxy[str]:
        return twilio.form(request)

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        form = self._form(request)
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or ""
        if not sid:
            raise Malformed("MessageSid is missing")
        if not _SID.match(sid):
            raise Malformed("MessageSid is not a Twilio sid")
        sender = form.get("From", "").strip()
        if not sender:
            raise Malformed("From is missing")
        try:
            num_media = int(form.get("NumMedia") or "0")
        except ValueError as err:
            raise Malformed("NumMedia is not a number") from err
        if not 0 <= num_media <= MAX_MEDIA:
            raise Malformed(f"NumMedia must be between 0 and {MAX_MEDIA}")
        attachments = tuple(
            Attachment(url=url, content_type=form.get(f"MediaContentType{i}") or None)
            for i in range(num_media)
            if (url := form.get(f"MediaUrl{i}"))
        )
        return [
            InboundMessage(
                at=self.now(),
                channel="sms",
                provider="twilio",
                provider_message_id=sid,
                sender=sender,
                recipient=form.get("To", "").strip(),
                text=form.get("Body", ""),
                sender_name=form.get("ProfileName") or None,
                attachments=attachments,
                metadata=_metadata(form, sender),
            )
        ]

    def accepted(self, request: ProviderRequest, messages: Sequence[InboundMessage]) -> web.StreamResponse:
        return web.Response(body=_TWIML_EMPTY_BYTES, content_type="text/xml", charset="utf-8")

    async def on_status(self, request: ProviderRequest) -> web.StreamResponse:
        """Delivery status callback: verified (by the SDK), logged, answered 200. A reply
        Twilio could not deliver after all (``failed``, ``undelivered``: the number is gone, a
        carrier refused) is reported as that reply's outcome, ``bounced``, so intake records
        ``DeliveryFailed``: the reply is named by the callback URL ``deliver`` gave Twilio
        (``_status_callback``), which Twilio's signature covers."""
        form = self._form(request)
        sid = form.get("MessageSid", "")
        if not sid:
            raise Malformed("MessageSid is missing")
        status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        code = form.get("ErrorCode") or None
        # Several callbacks per reply (queued, sent, delivered): debug, unless the reply failed.
        report = log.warning if status in _FAILED_STATUSES else log.debug
        report("sms.status", provider_message_id=sid, status=status, error_code=code)
        named = {key: request.query.get(param, "") for key, param in _REPLY_PARAMS.items()}
        if status in _FAILED_STATUSES and all(named.values()):
            reason = f"twilio {status}" + (f" error {code}" if code else "")
            bounce = ReplyOutcomeReported(
                at=self.now(), channel="sms", outcome="bounced", provider_message_id=sid, reason=reason, **named
            )
            reported = await self.publisher.report(bounce)  # Unavailable: 503, Twilio tries again
            log.info("inbound.bounce_reported", reply_id=named["reply_id"], seq=reported.seq)
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    # -- outbound -----------------------------------------------------------------------

    def messages_url(self) -> str:
        s = self.settings
        return f"{s.api_base_url.rstrip('/')}/2010-04-01/Accounts/{s.account_sid}/Messages.json"

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        """Send through Twilio's Messages API, on the platform the customer last wrote on
        (SMS or WhatsApp, ``metadata["platform"]``) and from the number they wrote to
        (``metadata["from"]``), else from ``from_number`` / ``messaging_service_sid``."""
        s = self.settings
        if not s.account_sid or not s.auth_token:
            return DeliveryResult.failed("sms connector: account_sid and auth_token are needed to send")
        whatsapp = reply.metadata.get("platform", _platform(reply.contact)) == "whatsapp"
        if reply.template is None and (why := text_limits.refusal(self.channel, reply.metadata, reply.text)):
            return DeliveryResult.failed(why)  # Twilio would refuse it (21617): a helpdesk's reply comes unchecked
        form = {"To": _on_platform(reply.contact, whatsapp), "Body": reply.text}
        if reply.template is not None:
            # WhatsApp templates through Twilio's Content API: the sid and {"1": …} variables.
            values = template_values(reply)
            if not whatsapp:
                return DeliveryResult.failed("sms connector: templates are WhatsApp messages; this reply is an SMS")
            if not reply.template.content_sid:
                return DeliveryResult.failed(f"template {reply.template.name} has no content_sid for Twilio")
            if values is None:
                return DeliveryResult.failed(f"template {reply.template.name}: its parameter values are unreadable")
            del form["Body"]
            form["ContentSid"] = reply.template.content_sid
            form["ContentVariables"] = json.dumps({str(i + 1): v for i, v in enumerate(values)})
        written_to = reply.metadata.get("from", "")
        if s.messaging_service_sid and not written_to:
            form["MessagingServiceSid"] = s.messaging_service_sid
        elif sender := written_to or s.from_number:
            # Twilio refuses a WhatsApp message from a plain number and an SMS from a
            # whatsapp: one.
            form["From"] = _on_platform(sender, whatsapp)
        else:
            return DeliveryResult.failed("sms connector: set from_number or messaging_service_sid to send")
        if s.status_callback_url:
            form["StatusCallback"] = _status_callback(s.status_callback_url, reply)
        # Files go as MMS (WhatsApp: media messages): Twilio fetches each MediaUrl, a signed
        # link to the API that needs no credentials. Twilio takes up to 10 per message.
        media = [a.url for a in reply.attachments if a.url]
        if len(media) > MAX_MEDIA:
            return DeliveryResult.failed(f"twilio takes at most {MAX_MEDIA} files per message, not {len(media)}")
        if media and reply.template is None:
            if not form["Body"].strip():
                del form["Body"]
        else:
            media = []
        fields = [*form.items(), *(("MediaUrl", url) for url in media)]
        credentials = base64.b64encode(f"{s.account_sid}:{s.auth_token}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
        async with self.http.post(self.messages_url(), data=fields, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        data = _json_object(raw)
        if status in (200, 201):
            sid = data.get("sid")
            if not isinstance(sid, str) or not sid:
                return DeliveryResult.failed(f"twilio answered {status} without a message sid", retryable=False)
            return DeliveryResult.sent(sid)
        code = data.get("code")
        message = data.get("message") or raw[:200].decode("utf-8", "replace") or "no detail"
        reason = f"twilio {status}" + (f" error {code}" if code else "") + f": {message}"
        return DeliveryResult.failed(reason, retryable=status == 429 or status >= 500, retry_after=retry_after)


# The reply a status callback is about, named in the callback URL (ids only, no personal data).
_REPLY_PARAMS = {"reply_id": "rd_reply", "customer_id": "rd_customer", "conversation_id": "rd_conversation"}


def _status_callback(url: str, reply: DeliverReply) -> str:
    """``url`` naming ``reply``: Twilio calls it back as given, signed, with these ids."""
    ids = {param: getattr(reply, key) for key, param in _REPLY_PARAMS.items()}
    return f"{url}{'&' if '?' in url else '?'}{urlencode(ids)}"


def _metadata(form: MultiDictProxy[str], sender: str) -> dict[str, str]:
    out = {key: form[name] for name, key in _METADATA.items() if form.get(name)}
    # WhatsApp through Twilio is the same phone identity as SMS, but a reply must go back
    # on the platform and from the number this message came in on.
    out["platform"] = _platform(sender)
    if written_to := form.get("To", "").strip():
        out["from"] = written_to
    return out


def _platform(address: str) -> str:
    return "whatsapp" if address.strip().lower().startswith("whatsapp:") else "sms"


def _on_platform(address: str, whatsapp: bool) -> str:
    """``address`` as Twilio wants it on that platform: ``whatsapp:+1555…`` or ``+1555…``."""
    number = address.strip()
    if number.lower().startswith("whatsapp:"):
        number = number[len("whatsapp:") :]
    return f"whatsapp:{number}" if whatsapp else number


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
