"""Files in replies: ``POST /v1/uploads`` keeps a file, a reply names it, the connector sends it.

1. ``POST /v1/uploads``: the body is the file (any ``Content-Type``; the name from
   ``?name=`` or ``Content-Disposition``) or a ``multipart/form-data`` form with a ``file``
   part. It is stored in the NATS object store ``rd_attachments`` as ``up_<id>`` (its name,
   type, size and sha256 beside it) and answered with the id.
2. ``POST /v1/conversations/{id}/reply`` (and ``POST /v1/conversations``) with
   ``"attachments": ["up_…"]``: each file is checked against the limits of the channel the
   reply goes out on (``services.api.attachment_limits``: ``CHANNEL_LIMITS``, or
   ``max_attachment_bytes`` / ``attachment_types`` in ``[connectors.<channel>]``) and recorded
   on ``ReplyRequested.attachments`` (url ``nats-object://rd_attachments/up_…``, name sealed
   like a message's attachments).
3. When the reply is queued for its connector (``with_links``), each url becomes a
   short-lived signed public link, ``{[api] public_url}/v1/files/<token>``: no bearer, since
   the provider fetches it (Twilio ``MediaUrl``, WhatsApp/Messenger media ``link``), the
   email connector downloads it for a MIME part, the chat widget shows it. The token names
   the object and its expiry, signed with HMAC-SHA256 under a key derived from the API's
   signing key; a forged, altered or expired link is 403. Links live ``LINK_SECONDS`` (chat:
   ``CHAT_LINK_SECONDS``, the widget's history shows them); the relay that queues a reply
   again signs afresh.

Who owns a file: an upload no reply has named yet is nobody's (any agent's draft); it is
marked ``draft`` in its description until the first reply names it. From then on it is the
file sent to that reply's customer, and erasing the customer removes it
(``services.customers.erase``; shared with whoever else got the very same upload). Drafts
nobody used within ``UNUSED_UPLOAD_HOURS`` are erased by ``run_upload_sweep`` (hourly, in the
API process). Uploads from before the mark existed carry none and are never swept.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import msgspec
import structlog
from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectDeletedError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from connectors.email.erasure import erase_attachments
from connectors.sdk.signatures import constant_time_equal, first_match
from events.model import Attachment, DeliverReply
from events.objects import ObjectUnreadable, read_object
from events.skips import count_skip
from events.streams import ATTACHMENTS_BUCKET, attachments_store, retention_max_age
from services.api.attachment_limits import limits_for
from services.api.common import READ_BODY, ApiDeps, ApiError, json_error, ok
from services.api.tokens import accepted_keys
from services.customers.scan import scan

log = structlog.get_logger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # the largest any channel takes (Messenger: 25 MB)
# The upload route, and the largest request body it reads (a multipart form's file, its headers
# and boundaries): more than the API's body limit, so the Idempotency-Key middleware reads an
# upload's body with this one (services.api.idempotency).
UPLOADS_PATH = "/v1/uploads"
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
TOO_LARGE = f"a file takes at most {MAX_UPLOAD_BYTES} bytes"
LINK_SECONDS = 3600
CHAT_LINK_SECONDS = 7 * 24 * 3600
OBJECT_PREFIX = f"nats-object://{ATTACHMENTS_BUCKET}/"
FILES_PATH = "/v1/files/"
_CONTEXT = b"relaydesk reply file links v1"
_UPLOAD_ID = re.compile(r"^up_[0-9a-f]{32}$")
_SAFE_NAME = re.compile(r"[^\w .()+-]")
# An upload no reply named within this long is erased (an agent's abandoned draft).
UNUSED_UPLOAD_HOURS = 24.0
SWEEP_EVERY_S = 3600.0


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    """What the object's description holds."""

    name: str
    content_type: str
    size: int
    sha256: str


class _Described(StoredFile, frozen=True, kw_only=True):
    """The description as stored: the file's facts, and whether no reply has named it yet."""

    draft: bool = False  # absent (False) on uploads from before drafts were marked: never swept


class _MetaRecord(msgspec.Struct):
    """What the sweep needs of an object store's meta message (``$O.<bucket>.M.<name>``)."""

    name: str = ""
    description: str = ""
    deleted: bool = False


def _described(info: ObjectInfo) -> _Described:
    return msgspec.json.decode(info.description or "", type=_Described)


class UploadResult(StoredFile, frozen=True, kw_only=True):
    """The answer to ``POST /v1/uploads`` (201): the id a reply names, and the file's facts."""

    id: str


async def _store(deps: ApiDeps) -> ObjectStore:
    js = deps.nc.jetstream()
    try:
        return await js.object_store(ATTACHMENTS_BUCKET)
    except BucketNotFoundError:
        # Made by the email connector when it runs; the API makes it otherwise.
        config = attachments_store(deps.replicas, max_age=retention_max_age(deps.message_days))
        return await js.create_object_store(ATTACHMENTS_BUCKET, config=config)


def _file_name(raw: str) -> str:
    name = _SAFE_NAME.sub("_", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    return name[:120] or "file"


async def _read_limited(reader: web.Request | BodyPartReader) -> bytes:
    out = bytearray()
    while True:
        chunk = await (reader.content.read(65536) if isinstance(reader, web.Request) else reader.read_chunk(65536))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_UPLOAD_BYTES:
            raise ApiError(413, TOO_LARGE)


def _within_limit(data: bytes) -> bytes:
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, TOO_LARGE)
    return data


def _multipart_of(request: web.Request, body: bytes) -> MultipartReader:
    """A multipart reader over a body read already (by the Idempotency-Key middleware)."""
    loop = asyncio.get_running_loop()
    # A stream of its own, not the connection's: its limit above the body, so feeding it never
    # asks a protocol to pause reading.
    content = StreamReader(BaseProtocol(loop), max(len(body), 2**16), loop=loop)
    content.feed_data(body)
    content.feed_eof()
    return MultipartReader(request.headers, content)


async def _received(request: web.Request) -> tuple[bytes, str, str]:
    """(bytes, name, content type) from a raw body or a multipart form's ``file`` part. A body
    the Idempotency-Key middleware read already is taken from there (found by a retry audit:
    every upload sent with a key was "the file is empty", a 400 then kept for the key)."""
    read = request.get(READ_BODY)
    if request.content_type == "multipart/form-data":
        try:
            multipart = await request.multipart() if read is None else _multipart_of(request, read)
            async for part in multipart:
                if isinstance(part, BodyPartReader) and part.name == "file":
                    kind = part.headers.get("Content-Type", "application/octet-stream")
                    # Clients percent-encode non-ASCII and spaces (RFC 7578 filename*=): decode it.
                    return await _read_limited(part), unquote(part.filename or "file"), kind
        except (ValueError, HttpProcessingError) as err:
            # No boundary, a part header aiohttp cannot parse (found by a fuzzing audit: a 500).
            raise ApiError(400, f"not a readable multipart form ({type(err).__name__})") from err
        raise ApiError(400, "multipart upload without a 'file' part")
    name = request.query.get("name") or ""
    disposition = request.headers.get("Content-Disposition", "")
    if not name and (found := re.search(r'filename="?([^";]+)"?', disposition)):
        name = found.group(1)
    data = await _read_limited(request) if read is None else _within_limit(read)
    return data, name or "file", request.content_type or "application/octet-stream"


async def upload(deps: ApiDeps, data: bytes, name: str, content_type: str) -> tuple[str, StoredFile]:
    if not data:
        raise ApiError(400, "the file is empty")
    upload_id = "up_" + uuid.uuid4().hex
    meta = StoredFile(
        name=_file_name(name),
        content_type=content_type.split(";")[0].strip().lower() or "application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    store = await _store(deps)
    described = msgspec.json.encode(_Described(**msgspec.structs.asdict(meta), draft=True)).decode()
    await store.put(upload_id, data, meta=ObjectMeta(name=upload_id, description=described))
    return upload_id, meta


async def attachments_for(deps: ApiDeps, ids: list[str], channel: str) -> tuple[Attachment, ...]:
    """The uploads ``ids`` as a reply's attachments on ``channel``; 400 naming what is wrong."""
    if not ids:
        return ()
    if len(ids) > 10:
        raise ApiError(400, "at most 10 attachments per reply")
    limits = limits_for(deps, channel)
    store = await _store(deps)
    out: list[Attachment] = []
    drafts: list[tuple[str, ObjectInfo, _Described]] = []
    for upload_id in ids:
        if not _UPLOAD_ID.match(upload_id):
            raise ApiError(400, f"not an upload id: {upload_id!r} (POST /v1/uploads gives one)")
        try:
            info = await store.get_info(upload_id)
            stored = _described(info)
        except (ObjectNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            raise ApiError(400, f"no upload {upload_id}") from None
        attachment = Attachment(
            url=OBJECT_PREFIX + upload_id,
            content_type=stored.content_type,
            name=stored.name,
            size=stored.size,
            sha256=stored.sha256,
        )
        if why := limits.refusal(channel, attachment):
            raise ApiError(400, why, attachment=upload_id)
        out.append(attachment)
        if stored.draft:
            drafts.append((upload_id, info, stored))
    for upload_id, info, stored in drafts:
        await _mark_used(store, upload_id, info, stored)
    return tuple(out)


async def _mark_used(store: ObjectStore, upload_id: str, info: ObjectInfo, stored: _Described) -> None:
    """A reply names the upload: no longer a draft, so the sweep leaves it (erasure takes it).
    Marked before the reply is appended: a reply that then fails leaves a kept file, never a
    reply whose file was swept."""
    used = msgspec.structs.replace(stored, draft=False)
    meta = ObjectMeta(name=upload_id, description=msgspec.json.encode(used).decode(), headers=info.headers)
    try:
        await store.update_meta(upload_id, meta)
    except (ObjectNotFoundError, ObjectDeletedError):
        raise ApiError(400, f"no upload {upload_id}") from None  # swept or erased this very moment


# --- the sweep of unused uploads ------------------------------------------------------------


async def sweep_unused_uploads(
    js: JetStreamContext, older_than_s: float = UNUSED_UPLOAD_HOURS * 3600, now: datetime | None = None
) -> int:
    """Erase (secure erase of their chunks) the drafts uploaded more than ``older_than_s`` ago
    that no reply named; returns how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_s)
    stale: list[str] = []
    stream, metas = f"OBJ_{ATTACHMENTS_BUCKET}", f"$O.{ATTACHMENTS_BUCKET}.M.>"
    async for msg in scan(js, stream, metas, last_per_subject=True):
        try:
            record = msgspec.json.decode(msg.data, type=_MetaRecord)
            if not _UPLOAD_ID.match(record.name) or record.deleted or not record.description:
                continue  # an email attachment, a raw mail, or gone already
            draft = msgspec.json.decode(record.description, type=_Described).draft
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("api.upload_meta_unreadable", stream=stream, seq=msg.metadata.sequence.stream)
            continue
        # The meta message of a draft is the one its upload wrote: its time is the upload's.
        if draft and msg.metadata.timestamp <= cutoff:
            stale.append(record.name)
    if not stale:
        return 0
    store = await js.object_store(ATTACHMENTS_BUCKET)
    confirmed: list[tuple[str, str]] = []
    for name in stale:  # again, just before: a reply may have named it meanwhile
        try:
            if _described(await store.get_info(name)).draft:
                confirmed.append((ATTACHMENTS_BUCKET, name))
        except (ObjectNotFoundError, NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    return await erase_attachments(js, confirmed)


async def run_upload_sweep(js: JetStreamContext, stop: asyncio.Event) -> None:
    """Sweep unused uploads now and then every ``SWEEP_EVERY_S`` until ``stop``."""
    while not stop.is_set():
        try:
            swept = await sweep_unused_uploads(js)
            log.info("api.uploads_swept", unused_hours=UNUSED_UPLOAD_HOURS, erased=swept)
        except Exception as err:  # NATS away: the next sweep tries again
            log.warning("api.upload_sweep_failed", error=repr(err), skipped="this sweep")
            count_skip("api.upload_sweep")
        try:
            await asyncio.wait_for(stop.wait(), SWEEP_EVERY_S)
        except TimeoutError:
            continue


# --- signed public links ------------------------------------------------------------------


def _key(deps: ApiDeps) -> bytes:
    return _link_key(accepted_keys(deps)[0])


def _link_key(key: bytes) -> bytes:
    return hmac.new(key, _CONTEXT, hashlib.sha256).digest()


def _mac(link_key: bytes, claims: bytes) -> str:
    return _b64(hmac.new(link_key, claims, hashlib.sha256).digest()[:20])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def link(deps: ApiDeps, upload_id: str, seconds: int, now: float | None = None) -> str:
    claims = _b64(msgspec.json.encode([upload_id, int((now or time.time()) + seconds)]))
    mac = _mac(_key(deps), claims.encode())
    return f"{deps.public_url.rstrip('/')}{FILES_PATH}{claims}.{mac}"


def _claims(deps: ApiDeps, token: str) -> str | None:
    """The upload id a valid, unexpired token names (None: forged, altered or expired)."""
    claims, _, mac = token.partition(".")
    try:
        message = claims.encode()

        # The keys of [api] extra_signing_keys too: a link signed before a rotation holds until it
        # expires (Twilio may fetch it late). A link's text is whoever sends it's (a fuzzing
        # audit: GET /v1/files/é.é was a 500).
        def signed(key: bytes) -> bool:
            return constant_time_equal(_mac(_link_key(key), message), mac)

        if first_match(accepted_keys(deps), signed) is None:
            return None
        upload_id, expires = msgspec.json.decode(_unb64(claims), type=tuple[str, int])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return upload_id if expires >= time.time() and _UPLOAD_ID.match(upload_id) else None


def with_links(deps: ApiDeps, deliver: DeliverReply) -> DeliverReply:
    """``deliver`` with each stored file's url replaced by a fresh signed public link."""
    if not any(a.url and a.url.startswith(OBJECT_PREFIX) for a in deliver.attachments):
        return deliver
    seconds = CHAT_LINK_SECONDS if deliver.channel == "chat" else LINK_SECONDS
    linked = tuple(
        msgspec.structs.replace(a, url=link(deps, a.url.removeprefix(OBJECT_PREFIX), seconds))
        if a.url and a.url.startswith(OBJECT_PREFIX)
        else a
        for a in deliver.attachments
    )
    return msgspec.structs.replace(deliver, attachments=linked)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.post(UPLOADS_PATH)
    async def create_upload(request: web.Request) -> web.Response:
        data, name, content_type = await _received(request)
        upload_id, stored = await upload(deps, data, name, content_type)
        log.info("api.uploaded", upload_id=upload_id, size=stored.size, content_type=stored.content_type)
        return ok(UploadResult(id=upload_id, **msgspec.structs.asdict(stored)), 201)

    @r.get(FILES_PATH + "{token}")
    async def serve_file(request: web.Request) -> web.StreamResponse:
        upload_id = _claims(deps, request.match_info["token"])
        if upload_id is None:
            return json_error(403, "this file link is invalid or expired")
        store = await _store(deps)
        try:
            info = await store.get_info(upload_id)
            stored = msgspec.json.decode(info.description or "", type=StoredFile)
            data = await read_object(deps.nc.jetstream(), ATTACHMENTS_BUCKET, upload_id)
        except (ObjectNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            data = None
        except ObjectUnreadable as err:
            log.warning("api.file_unreadable", upload_id=upload_id, error=str(err))
            return json_error(503, "the file cannot be read right now; try again")
        if data is None:
            return json_error(404, "this file is gone")
        headers = {
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(stored.name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, max-age=300",
        }
        return web.Response(body=data, content_type=stored.content_type, headers=headers)

    return r
