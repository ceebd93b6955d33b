"""The Meta connector: Messenger, Instagram and WhatsApp Cloud API webhooks on one endpoint.

Inbound: ``GET /meta/webhook`` answers Meta's verification (``hub.mode=subscribe``,
``hub.verify_token``, ``hub.challenge``); ``POST /meta/webhook`` is checked against
``X-Hub-Signature-256`` over the raw body, split into one ``InboundMessage`` per customer
message (see ``payload``) and answered 200 only once JetStream acknowledged every one of them
(503 otherwise: Meta retries, and ``Nats-Msg-Id: social:<mid|wamid|comment id>`` makes the
retry harmless). Echoes, WhatsApp ``statuses`` and receipts are counted and logged, not routed.

Outbound: replies on ``rd.out.social`` go through the Graph API Send endpoints; where a reply
goes is read from ``DeliverReply.metadata`` (the metadata of the customer's last message,
plus ``last_customer_message_at``):

==========================  ================================================================
``platform``                ``messenger`` | ``instagram`` | ``whatsapp`` | ``facebook``
``kind``                    ``message`` (default) | ``comment`` | ``post``: public items are
                            answered with a public comment reply (``reply_mode=private``:
                            a private reply to the commenter instead)
``page_id``                 Messenger Page id / Instagram account id (``POST /{id}/messages``)
``phone_number_id``         WhatsApp business number (``POST /{id}/messages``)
``comment_id``              public items: what the reply answers
``last_customer_message_at``  ISO 8601; more than ``window_hours`` ago → ``DeliveryFailed``
                            without calling Meta
==========================  ================================================================

Without ``platform``, a ``+<digits>`` contact is WhatsApp and anything else Messenger; missing
ids fall back to the ``page_id`` / ``phone_number_id`` settings. What Meta's answers mean (ids,
errors that retry, how long to wait) is read in ``graph_answers``.

Settings (``[connectors.social]``; ``RELAYDESK_META_APP_SECRET`` sets ``app_secret``)::

    host = "127.0.0.1"        port = 8082
    app_secret = ""           # checks X-Hub-Signature-256; empty: every POST gets 403
    extra_app_secrets = []    # also accepted: an Instagram app's secret, the old one while rotating
                              # (a list, or comma-separated: an env variable or secret file sets it)
    verify_token = ""         # the token typed into the app dashboard; empty: GET gets 403
    access_token = ""         # bearer token for the Send API (system-user or page token)
    page_tokens = {}          # per Page / IG account / phone number id tokens, over access_token
    page_id = ""              # default Page id when a reply carries none
    phone_number_id = ""      # default WhatsApp number id when a reply carries none
    graph_base_url = "https://graph.facebook.com"
    graph_version = "v21.0"
    window_hours = 24.0       # 0 disables the check (Meta still enforces it)
    human_agent_tag = false   # Messenger/IG: after the window, send with tag HUMAN_AGENT (≤ 7 days)
    max_body_bytes = 4194304  (plus every ConnectorSettings key)
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import structlog
from aiohttp import web

from connectors.sdk import (
    Connector,
    ConnectorSettings,
    DeliveryResult,
    Malformed,
    ProviderRequest,
    Route,
    Unauthentic,
    text_limits,
    utcnow,
)
from connectors.sdk.reply_command import template_values
from connectors.sdk.signatures import first_match, secret_list
from events.model import Attachment, Channel, DeliverReply, InboundMessage, TemplateMessage

from . import signature, window
from .graph_answers import answer_body, answer_text, failure, meta_wait, whatsapp_message_id
from .payload import PayloadParser

log = structlog.get_logger("relaydesk.connector.social")

WEBHOOK_PATH = "/meta/webhook"
_NODE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class MetaSettings(ConnectorSettings, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8082
    # Meta batches up to 1000 updates in one POST.
    max_body_bytes: int = 4 * 1024 * 1024
    app_secret: str = ""
    # More secrets accepted for X-Hub-Signature-256: an Instagram app's own secret, or the
    # previous secret while rotating.
    extra_app_secrets: list[str] | str = []
    verify_token: str = ""
    access_token: str = ""
    page_tokens: dict[str, str] = {}
    page_id: str = ""
    phone_number_id: str = ""
    graph_base_url: str = "https://graph.facebook.com"
    graph_version: str = "v21.0"
    window_hours: float = 24.0
    human_agent_tag: bool = False


class MetaConnector(Connector):
    name: ClassVar[str] = "social"
    channel: ClassVar[Channel] = "social"
    provider: ClassVar[str] = "meta"
    Settings: ClassVar[type[ConnectorSettings]] = MetaSettings
    inbound_paths: ClassVar[tuple[str, ...]] = (WEBHOOK_PATH,)

    settings: MetaSettings

    def __init__(self, settings: ConnectorSettings) -> None:
        if not isinstance(settings, MetaSettings):
            raise TypeError("MetaConnector needs MetaSettings")
        super().__init__(settings)
        self.parser = PayloadParser(self.graph_url())
        # Not routed, by kind (echo, status, receipt, reaction…): for health and tests.
        self.ignored: Counter[str] = Counter()
        self.clock: Callable[[], datetime] = utcnow

    def routes(self) -> list[Route]:
        return [Route("GET", WEBHOOK_PATH, handler=self.on_verification, verify=False), *super().routes()]

    async def startup(self) -> None:
        if not self.settings.app_secret:
            log.warning("social.no_app_secret", hint="set RELAYDESK_META_APP_SECRET; every webhook POST gets 403")
        if not self.settings.verify_token:
            log.warning("social.no_verify_token", hint="set [connectors.social] verify_token to subscribe the webhook")

    # -- inbound ------------------------------------------------------------------------

    async def on_verification(self, request: ProviderRequest) -> web.StreamResponse:
        """Meta's subscription check: echo ``hub.challenge`` when the verify token matches."""
        query = request.query
        mode = query.get("hub.mode", "")
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        expected = self.settings.verify_token
        if not expected:
            raise Unauthentic("the social connector has no verify_token configured")
        if mode != "subscribe" or not hmac.compare_digest(token.encode(), expected.encode()):
            raise Unauthentic("verification refused: hub.mode must be subscribe and hub.verify_token must match")
        log.info("social.verified")
        # The challenge is echoed as given: nosniff keeps a browser from reading it as HTML.
        return web.Response(text=challenge, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"})

    def verify(self, request: ProviderRequest) -> None:
        if not self.settings.app_secret:
            raise Unauthentic("the social connector has no app_secret configured")
        header = request.headers.get(signature.SIGNATURE_HEADER)
        if not header:
            raise Unauthentic(f"missing {signature.SIGNATURE_HEADER} header")
        secrets = [self.settings.app_secret, *secret_list(self.settings.extra_app_secrets)]
        if first_match(secrets, lambda secret: signature.valid(secret, request.body, header)) is None:
            # A rotated app secret refuses every webhook: say so, not only "invalid".
            raise Unauthentic(
                f"invalid {signature.SIGNATURE_HEADER}: signed with another app secret? rotated? "
                "list the other in extra_app_secrets"
            )

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        if request.content_type not in ("application/json", ""):
            raise Malformed(f"expected application/json, got {request.content_type}")
        payload = request.json()
        batch = self.parser.parse(payload, self.clock())
        self.ignored.update(batch.counts)
        for wamid, status in batch.statuses:
            log.debug("social.status", provider_message_id=wamid, status=status)
        # Once per webhook (receipts and echoes too: several per reply): at debug; what was
        # not routed is kept in ``ignored`` too.
        log.debug(
            "social.batch",
            object=payload.get("object") if isinstance(payload, dict) else None,
            messages=len(batch.messages),
            **{f"not_routed_{k}": v for k, v in sorted(batch.counts.items())},
        )
        return batch.messages

    def accepted(self, request: ProviderRequest, messages: Sequence[InboundMessage]) -> web.StreamResponse:
        return web.json_response({"accepted": len(messages)})

    # -- outbound -----------------------------------------------------------------------

    def graph_url(self, *path: str) -> str:
        s = self.settings
        return "/".join([s.graph_base_url.rstrip("/"), s.graph_version.strip("/"), *path])

    def token_for(self, node: str) -> str:
        return self.settings.page_tokens.get(node) or self.settings.access_token

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        meta = reply.metadata
        contact = reply.contact.strip()
        platform = meta.get("platform") or ("whatsapp" if contact.startswith("+") else "messenger")
        kind = meta.get("kind") or "message"
        if platform not in text_limits.SOCIAL:
            return DeliveryResult.failed(f"social connector: unknown platform {platform!r}")
        if reply.template is not None:
            # Templates are how WhatsApp lets a business write outside the 24-hour window.
            if platform != "whatsapp":
                return DeliveryResult.failed(f"social connector: templates are WhatsApp messages, not {platform}")
            return await self._send_whatsapp(reply)
        if not reply.text.strip() and not reply.attachments:
            return DeliveryResult.failed("social connector: empty reply text")
        limits = {**meta, "platform": platform}
        if why := text_limits.refusal(self.channel, limits, reply.text, with_files=bool(reply.attachments)):
            return DeliveryResult.failed(why)  # counted as the API counts (UTF-16 units)
        if kind in ("comment", "post"):
            return await self._reply_in_public(reply, platform)
        if platform == "facebook":
            return DeliveryResult.failed("social connector: facebook replies need kind comment or post")
        decision = window.check(
            platform,
            meta.get("last_customer_message_at"),
            self.clock(),
            window_hours=self.settings.window_hours,
            human_agent_tag=self.settings.human_agent_tag,
        )
        if not decision.ok:
            return DeliveryResult.failed(decision.reason)
        if reply.attachments:
            return await self._send_with_files(reply, platform, decision)
        if platform == "whatsapp":
            return await self._send_whatsapp(reply)
        return await self._send_messenger(reply, platform, decision)

    async def _send_messenger(
        self, reply: DeliverReply, platform: str, decision: window.WindowDecision
    ) -> DeliveryResult:
        page_id = reply.metadata.get("page_id") or self.settings.page_id
        if not _NODE.match(page_id):
            return DeliveryResult.failed(f"social connector: {platform} reply needs metadata page_id")
        body: dict[str, Any] = {
            "recipient": {"id": reply.contact.strip()},
            "messaging_type": decision.messaging_type,
            "message": {"text": reply.text},
        }
        if decision.tag:
            body["tag"] = decision.tag
        status, data, wait = await self._post(self.graph_url(page_id, "messages"), body, self.token_for(page_id))
        if status == 200:
            return DeliveryResult.sent(answer_text(data.get("message_id")))
        return failure(platform, status, data, wait)

    async def _send_whatsapp(self, reply: DeliverReply) -> DeliveryResult:
        number_id = reply.metadata.get("phone_number_id") or self.settings.phone_number_id
        if not _NODE.match(number_id):
            return DeliveryResult.failed("social connector: whatsapp reply needs metadata phone_number_id")
        to = "".join(ch for ch in reply.contact if ch.isdigit())
        if not to:
            return DeliveryResult.failed("social connector: whatsapp contact is not a phone number")
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": reply.text},
        }
        if reply.template is not None:
            values = template_values(reply)
            if values is None:
                return DeliveryResult.failed(f"template {reply.template.name}: its parameter values are unreadable")
            body = {**body, "type": "template", "template": whatsapp_template(reply.template, values)}
            del body["text"]
        quoted = reply.metadata.get("context_message_id")
        if quoted and reply.template is None:
            body["context"] = {"message_id": quoted}
        status, data, wait = await self._post(self.graph_url(number_id, "messages"), body, self.token_for(number_id))
        if status == 200:
            return DeliveryResult.sent(whatsapp_message_id(data))
        return failure("whatsapp", status, data, wait)

    async def _send_with_files(
        self, reply: DeliverReply, platform: str, decision: window.WindowDecision
    ) -> DeliveryResult:
        """One message per file, by link (Meta fetches the signed URL): WhatsApp puts the text
        as the first file's caption when it takes one; Messenger/Instagram send the text
        first. A failure part way is retried whole (at least once: a file may come twice)."""
        whatsapp = platform == "whatsapp"
        files = [a for a in reply.attachments if a.url]
        caption = whatsapp and bool(files) and _whatsapp_kind(files[0]) != "audio"
        first_id = ""
        if reply.text.strip() and not caption:
            result = await (self._send_whatsapp(reply) if whatsapp else self._send_messenger(reply, platform, decision))
            if not result.ok:
                return result
            first_id = result.provider_message_id or ""
        for i, file in enumerate(files):
            text = reply.text if caption and i == 0 else ""
            result = await (
                self._send_whatsapp_file(reply, file, text)
                if whatsapp
                else self._send_messenger_file(reply, platform, decision, file)
            )
            if not result.ok:
                return result
            first_id = first_id or result.provider_message_id or ""
        return DeliveryResult.sent(first_id)

    async def _send_whatsapp_file(self, reply: DeliverReply, file: Attachment, caption: str) -> DeliveryResult:
        number_id = reply.metadata.get("phone_number_id") or self.settings.phone_number_id
        if not _NODE.match(number_id):
            return DeliveryResult.failed("social connector: whatsapp reply needs metadata phone_number_id")
        kind = _whatsapp_kind(file)
        media: dict[str, Any] = {"link": file.url}
        if caption.strip():
            media["caption"] = caption
        if kind == "document":
            media["filename"] = file.name or "file"
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "".join(ch for ch in reply.contact if ch.isdigit()),
            "type": kind,
            kind: media,
        }
        status, data, wait = await self._post(self.graph_url(number_id, "messages"), body, self.token_for(number_id))
        if status == 200:
            return DeliveryResult.sent(whatsapp_message_id(data))
        return failure("whatsapp", status, data, wait)

    async def _send_messenger_file(
        self, reply: DeliverReply, platform: str, decision: window.WindowDecision, file: Attachment
    ) -> DeliveryResult:
        page_id = reply.metadata.get("page_id") or self.settings.page_id
        if not _NODE.match(page_id):
            return DeliveryResult.failed(f"social connector: {platform} reply needs metadata page_id")
        kind = (file.content_type or "").split("/")[0]
        attachment = {"type": kind if kind in ("image", "video", "audio") else "file", "payload": {"url": file.url}}
        body: dict[str, Any] = {
            "recipient": {"id": reply.contact.strip()},
            "messaging_type": decision.messaging_type,
            "message": {"attachment": attachment},
        }
        if decision.tag:
            body["tag"] = decision.tag
        status, data, wait = await self._post(self.graph_url(page_id, "messages"), body, self.token_for(page_id))
        if status == 200:
            return DeliveryResult.sent(answer_text(data.get("message_id")))
        return failure(platform, status, data, wait)

    async def _reply_in_public(self, reply: DeliverReply, platform: str) -> DeliveryResult:
        meta = reply.metadata
        comment_id = meta.get("comment_id", "")
        page_id = meta.get("page_id") or self.settings.page_id
        if not _NODE.match(comment_id):
            return DeliveryResult.failed("social connector: a public reply needs metadata comment_id")
        token = self.token_for(page_id) if page_id else self.settings.access_token
        if meta.get("reply_mode") == "private":
            # A private reply to the commenter (Messenger/IG DM), allowed once per comment.
            if not _NODE.match(page_id):
                return DeliveryResult.failed("social connector: a private reply needs metadata page_id")
            body: dict[str, Any] = {"recipient": {"comment_id": comment_id}, "message": {"text": reply.text}}
            status, data, wait = await self._post(self.graph_url(page_id, "messages"), body, token)
            sent_id = answer_text(data.get("message_id"))
        else:
            edge = "replies" if platform == "instagram" else "comments"
            status, data, wait = await self._post(self.graph_url(comment_id, edge), {"message": reply.text}, token)
            sent_id = answer_text(data.get("id"))
        if status == 200:
            return DeliveryResult.sent(sent_id)
        return failure(platform, status, data, wait)

    async def _post(self, url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any], float | None]:
        """The answer's status, its JSON body and how long Meta asked us to wait (None: it
        did not say)."""
        if not token:
            return 401, {"error": {"message": "social connector: no access_token configured", "code": 190}}, None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with self.http.post(url, json=body, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
            wait = meta_wait(resp.headers) if status != 200 else None
        return status, answer_body(raw), wait


def _whatsapp_kind(file: Attachment) -> str:
    """The Cloud API media message type for a file: image, video, audio, else document."""
    kind = (file.content_type or "").split("/")[0]
    return kind if kind in ("image", "video", "audio") else "document"


def whatsapp_template(template: TemplateMessage, values: list[str]) -> dict[str, Any]:
    """Cloud API ``template`` object: name, language and the body's parameters in order."""
    out: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if values:
        out["components"] = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}]
    return out
