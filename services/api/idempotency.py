"""``Idempotency-Key`` on API commands: a retried command does the thing once and answers
the first result.

A command (POST, PUT, PATCH, DELETE under ``/v1``) sent with an ``Idempotency-Key`` header
is recorded in the KV bucket ``rd_idempotency`` (kept 24 h), so the record holds across API
processes and restarts. The record's key is a hash of the caller's scope (``operator``, or
the agent token's id), the method, the path and the header's value:

- first time: a ``running`` record is created (create-only: of two racing requests one
  wins), the handler runs, and a 2xx or 4xx answer is kept (status, body, content type); a
  5xx, a 409 or 429 (a conflict with what changed meanwhile, or a limit: nothing was done
  and a retry may succeed) or an exception drops the record, so the client may retry;
- again, same request: the first answer, with ``Idempotent-Replayed: true``;
- again, another body (or query): 422 with the reason, nothing done;
- again while the first still runs: 409 with the reason (and ``Retry-After``). A ``running``
  record older than ``STALE_AFTER`` (its API process died mid-command) is taken over.
  So is, at once, a ``running`` record this process knows nothing runs for: a claim whose
  create NATS did not answer (503) but wrote after all (a publish the client buffered while
  NATS restarted and flushed on reconnect), or a record it could not drop. Found by a chaos
  audit: after a 7 s NATS restart an agent's retried reply or resolve was 409 "still running"
  for two minutes, though nothing ran. Another API process's retry waits until this one settles
  the record in the background once NATS answers (``Abandoned``: dropped, or its answer kept).

It sits between authentication and authorization (see ``services.api.auth``): a retried
accept answers the first accept's result although the offer is no longer open.

Kept answers may hold what must not rest in NATS in clear (a new agent token, a customer's
name): the body is sealed with AES-GCM under a key derived from the API's signing key, bound
to its record. Rotating the signing key makes earlier records unreadable: such a retry is
refused with 422 (use a new key) rather than run twice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from connectors.sdk.signatures import open_with_any
from events.streams import IDEMPOTENCY_BUCKET
from events.subjects import is_token
from services.api import uploads
from services.api.auth import TOKEN_ID, Handler
from services.api.common import ACTOR, READ_BODY, RECORDED_HEADER, ApiDeps, ApiError, json_error, loggable_path
from services.api.idempotency_records import STALE_AFTER, Abandoned, Record
from services.api.tokens import accepted_keys
from services.bus.errors import NATS_UNAVAILABLE

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
# Larger answers are not kept (the command still ran once; a retry runs it again).
MAX_KEPT_BODY = 512 * 1024
# 4xx answers that say "not now" rather than "no": the same request may succeed later.
RETRYABLE = frozenset({409, 429})
# At most this many ids per record (``command_refs``).
MAX_REFS = 64


class Sealer:
    """AES-GCM for kept answers, keyed from the API's signing key, bound to the record."""

    def __init__(self, secret: bytes, *extra: bytes) -> None:
        self.aead = AESGCM(hmac.new(secret, b"relaydesk idempotency records v1", hashlib.sha256).digest())
        # [api] extra_signing_keys: a record sealed with the old key is still answered from. By
        # the key they derive from, so an empty one is never tried (open_with_any skips it).
        self.opening = {
            k: AESGCM(hmac.new(k, b"relaydesk idempotency records v1", hashlib.sha256).digest())
            for k in (secret, *extra)
        }

    def seal(self, kv_key: str, body: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self.aead.encrypt(nonce, body, kv_key.encode())

    def open(self, kv_key: str, sealed: bytes) -> bytes | None:
        """The body, or None: sealed with none of the keys, or altered."""
        opening, bound = self.opening, kv_key.encode()
        return open_with_any(
            opening, lambda k: opening[k].decrypt(sealed[:12], sealed[12:], bound), (InvalidTag, ValueError)
        )


def valid_key(key: str) -> bool:
    """1 to ``MAX_KEY_LENGTH`` printable ASCII characters (a structured-field string, as the
    header's draft standard has it), as the OpenAPI document declares: a key of other printable
    characters (``é``), which the document refused, was taken (found by a fuzzing audit)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def record_key(scope: str, method: str, path: str, key: str) -> str:
    """The KV key: a hash, so any header value and path make a valid NATS KV key."""
    return hashlib.sha256(msgspec.json.encode([scope, method, path, key])).hexdigest()


def command_refs(path: str, *bodies: bytes) -> list[str]:
    """The ids a command named: its path's segments and, in its JSON bodies (request and
    answer), every id-shaped string (a subject token, as every id is) under a key ``id``,
    ``other``, ``*_id`` or ``*_ids``. Ids only,
    never addresses or names (a record keeps these in clear)."""
    refs = {segment for segment in path.split("/") if is_token(segment)}
    for body in bodies:
        try:
            _collect_ids(msgspec.json.decode(body) if body else None, refs)
        except (msgspec.DecodeError, RecursionError):
            continue  # not JSON: its path names what it concerned
    return sorted(refs)[:MAX_REFS]


def _collect_ids(value: object, refs: set[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect_ids(item, refs)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in ("id", "other") or key.endswith("_id"):
                if isinstance(item, str) and is_token(item):
                    refs.add(item)
            elif key.endswith("_ids") and isinstance(item, list):
                refs.update(i for i in item if isinstance(i, str) and is_token(i))
            else:
                _collect_ids(item, refs)


def command_id(request: web.Request, prefix: str) -> str | None:
    """The id of what a command creates (a reply, a note), derived from its ``Idempotency-Key``
    and its caller, method, path and content; None without a key. A command whose outcome was
    unknown (NATS did not answer in time: 503, and the record is let go) is run again by a retry
    with the same key: with this id it finds what the first attempt wrote and answers that,
    instead of writing it a second time (found by a retry audit: a reply sent twice to the
    customer). The content counts as it does for the record (``fingerprint``): a key used again
    for another text, once its record is gone (after 24 h, or let go after a 503), is another
    command; without it, that reply was answered 202 with the earlier one and never sent."""
    key = request.headers.get(HEADER)
    if not key:
        return None
    scope = f"token:{request[TOKEN_ID]}" if TOKEN_ID in request else request.get(ACTOR, "")
    content = fingerprint(request.query_string, request.get(READ_BODY, b""))
    digest = hashlib.sha256(
        msgspec.json.encode([prefix, scope, request.method, request.path, key, content])
    ).hexdigest()
    return f"{prefix}_{digest[:20]}"


def fingerprint(query: str, body: bytes) -> str:
    """The request's content; JSON bodies by their value (key order and spaces aside)."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body else b""
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested deeper than msgspec goes
        canonical = body
    return hashlib.sha256(msgspec.json.encode([query, canonical])).hexdigest()


def idempotency(deps: ApiDeps) -> Middleware:
    bucket: list[KeyValue] = []
    sealer = Sealer(*accepted_keys(deps))

    async def records() -> KeyValue:
        if not bucket:
            bucket.append(await deps.nc.jetstream().key_value(IDEMPOTENCY_BUCKET))
        return bucket[0]

    abandoned = Abandoned(records)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        actor = request.get(ACTOR)
        if key is None or request.method not in COMMAND_METHODS or not request.path.startswith("/v1/") or not actor:
            return await handler(request)
        if not valid_key(key):
            return json_error(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
        scope = f"token:{request[TOKEN_ID]}" if TOKEN_ID in request else actor
        kv_key = record_key(scope, request.method, request.path, key)
        print_ = fingerprint(request.query_string, await _body(request))
        bound = log.bind(
            actor=actor, method=request.method, path=loggable_path(request), idempotency_record=kv_key[:16]
        )
        claim = os.urandom(8).hex()
        try:
            kv = await records()
            revision = await _claim(kv, kv_key, print_, sealer, claim, abandoned)
        except _Answer as answer:
            if answer.replayed:
                bound.info("api.idempotent_replay", status=answer.response.status)
            return answer.response
        except NATS_UNAVAILABLE as err:
            # The record may be written all the same (a publish flushed on reconnect): nothing
            # runs for it, so this process's retry takes it over instead of a 409 for minutes.
            abandoned.add(kv_key, claim)
            bound.warning("api.idempotency_unavailable", error=repr(err))
            return json_error(503, "idempotency records unavailable (NATS): retry the request")
        except BucketNotFoundError:
            bound.error("api.idempotency_bucket_missing", bucket=IDEMPOTENCY_BUCKET)
            return json_error(503, f"no KV bucket {IDEMPOTENCY_BUCKET}: run `relaydesk setup` to create it")
        held = _Held(kv, kv_key, revision, claim, abandoned, bound)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _finish(held, print_, exc, sealer, request)
            raise
        except BaseException:
            await _release(held)
            raise
        await _finish(held, print_, response, sealer, request)
        return response

    return middleware


async def _body(request: web.Request) -> bytes:
    """The command's body, read once to fingerprint it and kept for the handler (``READ_BODY``).
    An upload is read with its own limit (its handler streams a body larger than the API's)."""
    if READ_BODY in request:
        return request[READ_BODY]
    if request.method == "POST" and request.path == uploads.UPLOADS_PATH:
        try:
            body = await request.clone(client_max_size=uploads.MAX_UPLOAD_REQUEST_BYTES).read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, uploads.TOO_LARGE) from None
    else:
        body = await request.read()
    request[READ_BODY] = body
    return body


class _Answer(Exception):
    def __init__(self, response: web.Response, replayed: bool = False) -> None:
        self.response = response
        self.replayed = replayed


async def _claim(kv: KeyValue, kv_key: str, print_: str, sealer: Sealer, claim: str, abandoned: Abandoned) -> int:
    """Create the ``running`` record and return its revision, or raise ``_Answer`` with
    what to say instead (the first result, 409 or 422)."""
    running = msgspec.json.encode(Record(state="running", fingerprint=print_, started_at=time.time(), claim=claim))
    for _ in range(3):
        try:
            return int(await kv.create(kv_key, running))
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(kv_key)
        except KeyNotFoundError:
            continue  # dropped in between (a 5xx): create again
        first = msgspec.json.decode(entry.value or b"{}", type=Record)
        if first.fingerprint != print_:
            raise _Answer(
                json_error(422, f"this {HEADER} was used with a different request (body or query); use a new key")
            )
        if first.state == "done":
            body = sealer.open(kv_key, first.body)
            if body is None:
                reason = f"the first result of this {HEADER} is unreadable (the API signing key changed); use a new key"
                raise _Answer(json_error(422, reason))
            headers = {REPLAYED: "true"}
            if first.content_type:
                headers["Content-Type"] = first.content_type
            raise _Answer(web.Response(status=first.status, body=body, headers=headers), replayed=True)
        if time.time() - first.started_at < STALE_AFTER and not abandoned.holds(kv_key, first.claim):
            answer = json_error(409, f"a request with this {HEADER} is still running; retry in a moment")
            answer.headers["Retry-After"] = "1"
            raise _Answer(answer)
        try:  # its API process died mid-command: take it over
            return int(await kv.update(kv_key, running, last=entry.revision))
        except KeyWrongLastSequenceError:
            continue
    raise _Answer(json_error(409, f"a request with this {HEADER} is still running; retry in a moment"))


async def _finish(held: _Held, print_: str, response: web.StreamResponse, sealer: Sealer, request: web.Request) -> None:
    """Keep a 2xx or 4xx answer (but 409, 429), or one saying the command is recorded; drop the
    record otherwise (the command may be retried). What NATS did not take is settled later
    (``Abandoned``)."""
    body = response.body if isinstance(response, web.Response) else None
    kept_status = (200 <= response.status < 300 or 400 <= response.status < 500) and response.status not in RETRYABLE
    kept_status = kept_status or RECORDED_HEADER in response.headers  # done, though unseen: not again
    if not isinstance(body, bytes) or len(body) > MAX_KEPT_BODY or not kept_status:
        return await _release(held)
    done = Record(
        state="done",
        fingerprint=print_,
        started_at=time.time(),
        status=response.status,
        body=sealer.seal(held.kv_key, body),
        content_type=response.headers.get("Content-Type", ""),
        refs=command_refs(request.path, await _body(request), body),
    )
    try:
        await held.kv.update(held.kv_key, msgspec.json.encode(done), last=held.revision)
    except KeyWrongLastSequenceError:
        held.bound.warning("api.idempotency_record_taken_over", status=response.status)
    except NATS_UNAVAILABLE as err:
        # The command is done; its answer is kept once NATS answers (``Abandoned``), and until
        # then a retry is 409 "still running" rather than run again.
        held.bound.warning("api.idempotency_record_not_kept", status=response.status, error=repr(err))
        held.abandoned.add(held.kv_key, held.claim, msgspec.json.encode(done))


async def _release(held: _Held) -> None:
    """Drop the record; when NATS does not answer it is left ``running``: this process's retry
    takes it over, and ``Abandoned`` drops it once NATS answers."""
    try:
        await held.kv.delete(held.kv_key, last=held.revision)
    except KeyWrongLastSequenceError:
        held.bound.warning("api.idempotency_record_taken_over")
    except NATS_UNAVAILABLE as err:
        held.bound.warning("api.idempotency_record_not_released", error=repr(err))
        held.abandoned.add(held.kv_key, held.claim)


@dataclass(frozen=True)
class _Held:
    """A command's claimed record: where it is, the revision and claim it was written with."""

    kv: KeyValue
    kv_key: str
    revision: int
    claim: str
    abandoned: Abandoned
    bound: structlog.BoundLogger
