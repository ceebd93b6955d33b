"""Attachments the console can open: short-lived signed links, served by the API.

A message's attachment is stored where its connector put it: the email connector in the NATS
object store (``nats-object://rd_attachments/<sha256>``), Meta at a Graph API media URL that
answers only with the page's or app's token. Neither opens in a browser. So every attachment
the API shows (the timeline's ``detail.attachments[i].url``) is replaced by
``/v1/attachments/<token>``: the token names the customer, the message (its log sequence and
message id), the attachment's index, the caller it was made for and when it expires (5 min),
signed with HMAC-SHA256 under a key derived from the API's signing key. The route checks the
signature, the expiry and the caller (a link copied to someone else does not open for them),
reads that one event by sequence (a direct get), and answers the object's bytes or fetches the
provider's media server-side with the provider's credentials (``[connectors.social]``
``access_token`` / ``page_tokens``). A forged, altered, expired or someone else's link is 403;
media the API has no way to fetch (another provider, no token configured, the provider
refusing) is 502 with the reason.

Bytes are served ``nosniff`` with a sandboxing CSP; only types a browser shows harmlessly
(images, PDF, audio, video, plain text) are ``inline``, anything else downloads as
``application/octet-stream``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec
import structlog
from aiohttp import web

from connectors.sdk.signatures import constant_time_equal, first_match
from events import subjects
from events.model import Attachment, MessageReceived
from events.objects import ObjectUnreadable, read_object
from events.personal import ERASED
from events.skips import count_skip
from events.streams import ATTACHMENTS_BUCKET
from services.api.common import ACTOR, ApiDeps, json_error
from services.api.tokens import accepted_keys

log = structlog.get_logger(__name__)

LINK_SECONDS = 300
MAX_MEDIA_BYTES = 25 * 1024 * 1024
FETCH_TIMEOUT_S = 20.0
_CONTEXT = b"relaydesk attachment links v1"
_OBJECT_URL = "nats-object://"
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain")
INLINE_PREFIXES = ("audio/", "video/")
# Meta's CDNs serve Messenger / Instagram attachment URLs without a token (they are signed).
META_CDN_SUFFIXES = (".fbcdn.net", ".fbsbx.com", ".cdninstagram.com")
DEFAULT_GRAPH = "https://graph.facebook.com"
DEFAULT_TWILIO_API = "https://api.twilio.com"


class LinkClaims(msgspec.Struct, array_like=True, frozen=True):
    customer_id: str
    seq: int
    message_id: str
    index: int
    actor: str
    expires: int


class Links:
    """Makes and checks attachment links for one API process."""

    def __init__(self, key: bytes, *extra: bytes, clock: Any = time.time) -> None:
        self.key = hmac.new(key, _CONTEXT, hashlib.sha256).digest()
        # [api] extra_signing_keys: links signed with the old key hold until they expire. By the
        # key they derive from, so an empty one is never taken (first_match skips it).
        self.checking = {k: hmac.new(k, _CONTEXT, hashlib.sha256).digest() for k in (key, *extra)}
        self.clock = clock

    def token(self, customer_id: str, seq: int, message_id: str, index: int, actor: str) -> str:
        claims = LinkClaims(customer_id, seq, message_id, index, actor, int(self.clock()) + LINK_SECONDS)
        payload = _b64(msgspec.json.encode(claims))
        return f"{payload}.{self._sign(payload)}"

    def check(self, token: str) -> LinkClaims | str:
        """The claims of a valid, unexpired token, or why it is refused."""
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            return "this attachment link is not valid"
        checking = self.checking
        if first_match(checking, lambda k: constant_time_equal(self._sign(payload, checking[k]), signature)) is None:
            return "this attachment link is not valid"
        try:
            claims = msgspec.json.decode(_unb64(payload), type=LinkClaims)
        except (msgspec.DecodeError, ValueError):
            return "this attachment link is not valid"
        if claims.expires < int(self.clock()):
            return "this attachment link has expired: reload the conversation for a fresh one"
        return claims

    def _sign(self, payload: str, key: bytes | None = None) -> str:
        message = payload.encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self.key if key is None else key, message, hashlib.sha256).digest())

    def with_urls(self, entries: list[dict[str, Any]], actor: str) -> list[dict[str, Any]]:
        """Timeline entries (as served) with each inbound attachment's ``url`` a signed link;
        an attachment with nowhere to fetch it from (no URL, erased) gets ``url: null``."""
        for entry in entries:
            detail = entry.get("detail") or {}
            attachments = detail.get("attachments")
            if entry.get("kind") != "message_in" or not isinstance(attachments, list):
                continue
            for index, attachment in enumerate(attachments):
                if not isinstance(attachment, dict):
                    continue
                source = attachment.get("url")
                usable = isinstance(source, str) and source not in ("", ERASED) and entry.get("message_id")
                attachment["url"] = None
                if usable:
                    token = self.token(entry["customer_id"], entry["seq"], entry["message_id"], index, actor)
                    attachment["url"] = f"/v1/attachments/{token}"
        return entries


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MediaUnavailable(Exception):
    """The attachment's bytes cannot be had: ``status`` (404 gone, 502 the provider's side)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def links_for(deps: ApiDeps) -> Links:
    return Links(*accepted_keys(deps))


async def fetch_provider_media(
    http: aiohttp.ClientSession,
    url: str,
    metadata: dict[str, str],
    social: dict[str, Any],
    twilio: dict[str, Any] | None = None,
) -> tuple[bytes, str | None]:
    """The bytes of a provider's media URL, fetched with the provider's credentials.

    A Graph API media URL (WhatsApp: ``<graph>/<version>/<media id>``) answers JSON with a
    short-lived ``url``; both requests carry the token of the phone number / page the message
    came to (``page_tokens``), else the app's ``access_token`` (Meta's documented media flow).
    Messenger and Instagram attachment URLs on Meta's CDNs are fetched as they are.
    Twilio MMS media (``<api>/2010-04-01/Accounts/<sid>/Messages/<sid>/Media/<sid>``) is fetched
    with HTTP basic auth (account sid, auth token of ``[connectors.sms]``), which Twilio asks for
    when "HTTP Basic Authentication for media" is on and ignores otherwise; it answers with a
    redirect to a short-lived signed URL, which aiohttp follows without the credentials."""
    parts = urlsplit(url)
    graph = urlsplit(str(social.get("graph_base_url") or DEFAULT_GRAPH))
    if parts.scheme not in ("http", "https"):
        raise MediaUnavailable(502, f"cannot fetch a {parts.scheme or 'schemeless'} attachment URL")
    host = (parts.hostname or "").lower()
    if (parts.scheme, parts.netloc) == (graph.scheme, graph.netloc):
        tokens = social.get("page_tokens") or {}
        node = metadata.get("phone_number_id") or metadata.get("page_id") or ""
        token = (tokens.get(node) if isinstance(tokens, dict) else None) or social.get("access_token") or ""
        if not token:
            raise MediaUnavailable(502, "no Meta access token configured ([connectors.social] access_token)")
        headers = {"Authorization": f"Bearer {token}"}
        info = await _get(http, url, headers, want_json=True)
        media_url = info.get("url") if isinstance(info, dict) else None
        if not isinstance(media_url, str) or not _fetchable(media_url, graph.scheme, graph.netloc):
            raise MediaUnavailable(502, "Meta's media answer had no download URL")
        data, content_type = await _get(http, media_url, headers)
        return data, content_type or (info.get("mime_type") if isinstance(info, dict) else None)
    if parts.scheme == "https" and host.endswith(META_CDN_SUFFIXES):
        return await _get(http, url, {})  # type: ignore[no-any-return]
    twilio = twilio or {}
    api = urlsplit(str(twilio.get("api_base_url") or DEFAULT_TWILIO_API))
    if (parts.scheme, parts.netloc) == (api.scheme, api.netloc):
        sid = str(twilio.get("account_sid") or _account_in_path(parts.path))
        token = str(twilio.get("auth_token") or "")
        if not (sid and token):
            raise MediaUnavailable(502, "no Twilio credentials configured ([connectors.sms] account_sid, auth_token)")
        basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
        return await _get(http, url, {"Authorization": f"Basic {basic}"})  # type: ignore[no-any-return]
    raise MediaUnavailable(502, f"no credentials to fetch media from {host or 'this URL'}")


def _account_in_path(path: str) -> str:
    """``AC…`` from ``/2010-04-01/Accounts/AC…/Messages/…`` ("" if the path has none)."""
    parts = path.split("/")
    return parts[parts.index("Accounts") + 1] if "Accounts" in parts[:-1] else ""


def _fetchable(url: str, graph_scheme: str, graph_netloc: str) -> bool:
    """Meta's download URL: https (lookaside.fbsbx.com), or on the Graph host itself."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme, parts.netloc) == (graph_scheme, graph_netloc)


async def _get(http: aiohttp.ClientSession, url: str, headers: dict[str, str], *, want_json: bool = False) -> Any:
    host = urlsplit(url).hostname or "the provider"
    try:
        async with http.get(url, headers=headers, allow_redirects=True) as answer:
            if answer.status in (401, 403):
                raise MediaUnavailable(502, f"{host} refused the credentials (HTTP {answer.status})")
            if answer.status == 404:
                raise MediaUnavailable(404, f"{host} no longer has this media (HTTP 404)")
            if answer.status >= 300:
                raise MediaUnavailable(502, f"{host} answered HTTP {answer.status}")
            if (answer.content_length or 0) > MAX_MEDIA_BYTES:
                raise MediaUnavailable(502, f"the media is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MiB")
            data = await answer.content.read(MAX_MEDIA_BYTES + 1)
            if len(data) > MAX_MEDIA_BYTES:
                raise MediaUnavailable(502, f"the media is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MiB")
            if want_json:
                try:
                    return msgspec.json.decode(data)
                except msgspec.DecodeError as err:
                    raise MediaUnavailable(502, f"{host} answered something that is not JSON") from err
            return data, answer.content_type
    except (TimeoutError, aiohttp.ClientError) as err:
        raise MediaUnavailable(502, f"{host} could not be reached ({type(err).__name__})") from err


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    links = links_for(deps)

    async def message_at(claims: LinkClaims) -> MessageReceived:
        try:
            raw = await deps.store.js.get_msg(subjects.EVENTS_STREAM, seq=claims.seq, direct=True)
        except Exception as err:  # gone (it never is: the log keeps everything) or NATS away
            raise MediaUnavailable(404, "no such message") from err
        stored = await deps.store.decoded(claims.seq, raw.subject or "", raw.data or b"", raw.headers)
        event = stored.event
        if (
            not isinstance(event, MessageReceived)
            or event.customer_id != claims.customer_id
            or event.message_id != claims.message_id
        ):
            raise MediaUnavailable(404, "no such message")
        return event

    async def content_of(event: MessageReceived, attachment: Attachment) -> tuple[bytes, str | None]:
        url = attachment.url or ""
        if url == ERASED or attachment.name == ERASED:
            raise MediaUnavailable(410, "this customer was erased: the attachment is gone")
        if url.startswith(_OBJECT_URL):
            bucket, _, name = url[len(_OBJECT_URL) :].partition("/")
            allowed = {ATTACHMENTS_BUCKET, str((deps.connectors.get("email") or {}).get("attachment_bucket", ""))}
            if bucket not in allowed or not name:
                raise MediaUnavailable(404, "not an attachment store this API reads")
            try:
                data = await read_object(deps.store.js, bucket, name)
            except ObjectUnreadable as err:
                raise MediaUnavailable(502, "the object store did not answer in time") from err
            except Exception as err:  # the bucket is missing (nothing was ever stored)
                raise MediaUnavailable(404, "the attachment is no longer stored") from err
            if data is None:
                raise MediaUnavailable(404, "the attachment is no longer stored (erased or expired)")
            return data, attachment.content_type
        if not url:
            raise MediaUnavailable(404, "the provider gave no location for this attachment")
        # A session per fetch: provider media is opened now and then, and its URLs are one-off.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as http:
            return await fetch_provider_media(
                http, url, event.metadata, deps.connectors.get("social") or {}, deps.connectors.get("sms") or {}
            )

    @r.get("/v1/attachments/{token}")
    async def attachment(request: web.Request) -> web.StreamResponse:
        claims = links.check(request.match_info["token"])
        if isinstance(claims, str):
            return json_error(403, claims)
        if claims.actor != request[ACTOR]:
            return json_error(403, "this attachment link was made for someone else")
        bound = log.bind(customer_id=claims.customer_id, seq=claims.seq, index=claims.index, actor=request[ACTOR])
        try:
            event = await message_at(claims)
            if not 0 <= claims.index < len(event.attachments):
                raise MediaUnavailable(404, "no such attachment")
            found = event.attachments[claims.index]
            data, content_type = await content_of(event, found)
        except MediaUnavailable as err:
            bound.info("api.attachment_unavailable", status=err.status, reason=err.reason)
            if err.status >= 500:
                count_skip("api.attachment_fetch")
            return json_error(err.status, err.reason)
        bound.info("api.attachment_served", size=len(data))
        return web.Response(body=data, headers=_headers(found, content_type))

    return r


def _headers(attachment: Attachment, content_type: str | None) -> dict[str, str]:
    kind = (attachment.content_type or content_type or "").split(";")[0].strip().lower()
    inline = kind in INLINE_TYPES or kind.startswith(INLINE_PREFIXES)
    name = attachment.name if attachment.name and attachment.name != ERASED else "attachment"
    disposition = "inline" if inline else "attachment"
    return {
        "Content-Type": kind if inline else "application/octet-stream",
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
        "Cache-Control": "private, max-age=300",
    }
