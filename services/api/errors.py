"""Every error the API answers is ``{"error": ...}`` JSON, also those aiohttp raises itself:
no route (404), a method the route does not take (405, its ``Allow`` header kept), a body over
the limit (413, the limit in KiB). An error already JSON (``ApiError``, ``json_error``) passes
as it is; answers below 400 (redirects) and every non-error answer (the console's HTML and
scripts, ``/docs``, the event stream) are untouched. A body that cannot be decoded (a corrupt
gzip or deflate ``Content-Encoding``) is a JSON 400, not a crash. And NATS not answering in time (or at all)
is a JSON 503 that says the outcome is unknown, not aiohttp's blank 504 for a ``TimeoutError``;
the timelines database not answering (``StoreUnavailable``) a JSON 503 that says so.

Any other exception a handler lets out is a fault of the API, not of the request: a JSON 500
(``{"error": "internal error …", "incident": <id>}``) that says nothing of the exception, and
one ``api.unhandled_error`` line with the traceback under the same id. Found by a fuzzing
audit: a signed link with a non-ASCII character (``GET /v1/files/é.é``) or a multipart upload
without a boundary was aiohttp's plain-text 500, outside the contract's ``Error`` shape."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from connectors.sdk.http import unreadable_body
from events.errors import describe_error
from events.redact import redact_error
from events.storage_full import STORAGE_FULL, note_storage_full, storage_full
from services.api.common import loggable_path
from services.bus.errors import NATS_UNAVAILABLE
from services.timelines.store import StoreUnavailable

log = structlog.get_logger(__name__)

# The headers of the error kept on its JSON answer (aiohttp sets the body's own).
_BODY_HEADERS = frozenset({hdrs.CONTENT_TYPE.lower(), hdrs.CONTENT_LENGTH.lower()})

NATS_AWAY = (
    "NATS did not answer in time, so the outcome is unknown: retry the request "
    "(a command retried with the same Idempotency-Key is done at most once)"
)
TIMELINES_AWAY = (
    "the timelines database did not answer (restarting, unreachable, or a lock held on its tables): retry the request"
)


def json_errors(body_limit: int) -> Middleware:
    """The outermost middleware (``body_limit``: the application's ``client_max_size``). Outside
    the idempotency middleware too, which lets a key go when the request ends in an exception."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as err:
            if err.status < 400 or (err.content_type or "").startswith("application/json"):
                raise
            reason, extra = describe(err, request, body_limit)
            headers = {k: v for k, v in err.headers.items() if k.lower() not in _BODY_HEADERS}
            return web.json_response({"error": reason, **extra}, status=err.status, headers=headers)
        except web.RequestPayloadError as err:
            # Wherever a handler or a middleware read the body; a gzip bomb is aiohttp's 413 above.
            error = redact_error(str(err).strip())
            log.info("api.body_undecodable", method=request.method, path=loggable_path(request), error=error)
            return web.json_response({"error": unreadable_body(request)}, status=400)
        except NATS_UNAVAILABLE as err:
            if storage_full(err):  # not a moment's absence: no write succeeds until space is freed
                note_storage_full("api", err, method=request.method, path=loggable_path(request))
                return web.json_response({"error": STORAGE_FULL}, status=503, headers={hdrs.RETRY_AFTER: "60"})
            log.warning(
                "api.nats_unavailable", method=request.method, path=loggable_path(request), error=describe_error(err)
            )
            return web.json_response({"error": NATS_AWAY}, status=503, headers={hdrs.RETRY_AFTER: "1"})
        except StoreUnavailable as err:
            if _answer_started(request):
                raise
            # A read of the timelines store (services.timelines): the database's fault, not the
            # request's; was a 500 with an incident id (found by the projection-database audit).
            log.warning(
                "api.timelines_unavailable", method=request.method, path=loggable_path(request), error=str(err)[:300]
            )
            return web.json_response({"error": TIMELINES_AWAY}, status=503, headers={hdrs.RETRY_AFTER: "2"})
        except Exception as err:
            if _answer_started(request):
                raise  # a stream under way (its client gone, say): no second answer to give
            return unhandled(err, request)

    return middleware


INTERNAL = "internal error: the API failed on this request; it is logged under this incident id"


def unhandled(err: BaseException, request: web.Request) -> web.Response:
    """The JSON 500 for an exception no handler expected: its id, never its text (it may quote
    what the request held); the traceback goes to the log under that id."""
    incident = uuid.uuid4().hex[:16]
    log.error(
        "api.unhandled_error",
        method=request.method,
        path=loggable_path(request),
        incident=incident,
        error=type(err).__name__,
        exc_info=err,
    )
    return web.json_response({"error": INTERNAL, "incident": incident}, status=500)


def _answer_started(request: web.Request) -> bool:
    """Whether the handler began writing its own answer (an event stream) before it failed."""
    return bool(getattr(request.writer, "output_size", 0))


def describe(err: web.HTTPException, request: web.Request, body_limit: int) -> tuple[str, dict[str, Any]]:
    """A sentence for a person (and fields for a program) saying what was wrong."""
    if isinstance(err, web.HTTPMethodNotAllowed):
        allowed = sorted(err.allowed_methods)
        return f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}", {"allowed": allowed}
    if isinstance(err, web.HTTPRequestEntityTooLarge):
        return f"the request body is larger than the limit of {body_limit // 1024} KiB", {}
    text = (err.text or "").strip()
    if not text or text == f"{err.status}: {err.reason}":  # aiohttp's own plain text
        if isinstance(err, web.HTTPNotFound):
            return f"not found: {request.method} {request.path}", {}
        return err.reason.lower(), {}
    return text, {}
