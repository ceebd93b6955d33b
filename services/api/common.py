"""Shared pieces of the API: dependencies, JSON answers, body decoding, the actor key."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args

import msgspec
from aiohttp import web
from nats.aio.client import Client as NATS

from events import subjects
from events.model import AgentStatus, LogEvent
from events.store import Append, EventStore
from router.policy import RouterPolicy
from services import tracing
from services.api.console_settings import ConsoleSettings
from services.api.operators import OperatorTable
from services.api.readiness import STALE_AFTER_S, Freshness
from services.api.readmodel import LiveState
from services.api.registry import Registry
from services.api.templates import TemplateSettings
from services.delivery.slack_settings import SlackSettings
from services.identity import IdentityDirectory
from services.identity.addresses import mask
from services.timelines.store import TimelineStore

if TYPE_CHECKING:
    from services.api.known_conversations import ResolvedUnassigned

# Who is acting: "operator", "operator:<name>", "agent:<id>" or "supervisor:<id>"; set by the
# auth middleware, put on every event.
ACTOR = web.RequestKey("actor", str)
# A command's body as the Idempotency-Key middleware read it to fingerprint it, kept for a
# handler that would stream it (an upload): that read has consumed the stream.
READ_BODY = web.RequestKey("read_body", bytes)


# "operator", "supervisor" or "agent", set with ACTOR by the auth middleware (services.api.auth).
ROLE = web.RequestKey("role", str)


def is_operator(request: web.Request) -> bool:
    """Whether the shared operator token or a named one (``operator:<name>``) is calling."""
    return request.get(ROLE) == "operator"


@dataclass
class ApiDeps:
    nc: NATS
    store: EventStore
    live: LiveState
    timelines: TimelineStore | None
    directory: IdentityDirectory
    token: str
    policy: RouterPolicy = field(default_factory=RouterPolicy)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # /readyz says not ready when the view leaves an end of the log unreached this long (readiness.py).
    view_stale_after: float = STALE_AFTER_S
    # What /readyz and the health port's check have seen of the log's end: one memory, so both
    # say the same (services.api.health).
    freshness: Freshness = field(init=False)
    # A reply with no outcome after this long is queued for its connector again (replies.py).
    reply_requeue_after: float = 30.0
    # Signs agent tokens (tokens.py); empty: derived from the operator token.
    signing_key: str = ""
    # Also accepted, never used to sign ([api] extra_signing_keys): the old key while rotating.
    extra_signing_keys: tuple[str, ...] = ()
    # Named operator tokens, name -> "sha256:<hex>" ([api.operators], services.api.operators),
    # replaced when the config file changes (services.api.operators_reload).
    operators: OperatorTable = field(default_factory=OperatorTable)
    # Replicas of a bucket the API creates when it is missing ([nats] replicas).
    replicas: int = 1
    # [retention] message_days (0: none): how long the files of messages are kept.
    message_days: int = 0
    # The Slack app (/slack/interactions, /slack/events): signing secret, users, bot token.
    slack: SlackSettings = field(default_factory=SlackSettings)
    # The console's workspace: canned replies, the CRM link ([console], services.api.canned).
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    # The [connectors.<name>] tables: the credentials to fetch provider media (services.api.attachments).
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Channel -> the connector serving it, where its name is another (``whatsapp_cloud``
    # serving ``whatsapp``): whose table holds that channel's settings (``connector_table``).
    channel_connectors: dict[str, str] = field(default_factory=dict)
    # The skills and languages agents and transfers may name ([routing], services.api.registry).
    registry: Registry = field(default_factory=Registry)
    # WhatsApp message templates ([[templates]], services.api.templates).
    templates: tuple[TemplateSettings, ...] = ()
    # The API as providers reach it: the base of signed file links (services.api.uploads).
    public_url: str = "http://127.0.0.1:8080"
    # Channels whose connector shows a ``resolved`` notice (services.api.closings): the
    # runner gives the installed connectors' (``connectors.sdk.registry.notice_channels``).
    notice_channels: frozenset[str] = frozenset({"chat"})
    # Conversations resolved unassigned (services.api.known_conversations; set by build_app):
    # with the view and custody, every conversation the view has read, found without a search.
    known_conversations: ResolvedUnassigned | None = None

    def __post_init__(self) -> None:
        self.freshness = Freshness(self.view_stale_after)

    def connector_table(self, channel: str) -> dict[str, Any]:
        """The ``[connectors.<name>]`` table of the connector serving ``channel`` (may be empty)."""
        return self.connectors.get(self.channel_connectors.get(channel, channel)) or {}

    async def append(self, event: LogEvent, expected: int | None) -> int:
        """Append, then wait until the live view includes it (read-your-writes). When the view
        does not within its wait, ``ViewBehind``: found by a burst audit, a command answered 500
        after its write (a token issued, its secret never shown), or 200 with what it replaced."""
        seq = await self.store.append(Append(event, expected=expected, trace=tracing.headers()))
        await self.shows(seq)
        return seq

    async def shows(self, seq: int) -> None:
        """Until the view includes ``seq``, an event this command wrote; ``ViewBehind`` when it
        does not within the wait (every read-your-writes of the API waits here)."""
        if not await self.live.wait_for(seq):
            raise ViewBehind(seq)

    async def has_read(self, seq: int) -> None:
        """Until the view includes ``seq``, read before a command decides on the view (nothing
        written yet); a 503 to retry when it does not within the wait."""
        if seq and not await self.live.wait_for(seq):
            error = ApiError(503, "this API's view of the log is behind; retry in a moment", retryable=True)
            error.headers["Retry-After"] = "5"
            raise error


def ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def json_error(status: int, reason: str, **extra: object) -> web.Response:
    return ok({"error": reason, **extra}, status)


def id_problem(kind: str, value: str) -> str | None:
    """Why ``value`` cannot be a ``kind`` id (it stands as a NATS subject token), else None:
    the length when that is what is wrong, else the characters."""
    if not 1 <= len(value) <= subjects.TOKEN_MAX_LENGTH:
        return f"{kind} id takes 1 to {subjects.TOKEN_MAX_LENGTH} characters, not {len(value)}"
    try:
        subjects.token(value)
    except subjects.InvalidToken:
        return f"{kind} id may use letters, digits, '-' and '_' only"
    return None


MAX_NAME = 200  # a display name (an agent's, a customer's): shown in the console, kept in events


# Characters no display name holds: control characters (NUL, CR, LF, ESC, DEL, C1), line and
# paragraph separators, and the bidirectional embeddings, overrides and isolates that make
# text read otherwise than it is stored.
_NOT_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def name_problem(name: str, field: str = "name") -> str | None:
    """A display name over ``MAX_NAME`` characters (a runaway script, a paste) is refused, and
    so is one holding a character that is no part of a name (``_NOT_IN_NAMES``): found by a
    fuzzing audit, an agent's name of a line break and a ``Bcc:`` header (or a NUL, an escape
    sequence for a terminal reading the logs) was stored and shown wherever the name goes."""
    if len(name) > MAX_NAME:
        return f"{field} takes at most {MAX_NAME} characters, not {len(name)}"
    if found := _NOT_IN_NAMES.search(name):
        return f"{field} may not hold control or text-direction characters (U+{ord(found.group()):04X})"
    return None


class ApiError(web.HTTPException):
    """Raise to answer at once with ``{"error": reason}`` and ``status``."""

    def __init__(self, status: int, reason: str, **extra: object) -> None:
        self.status_code = status
        super().__init__(text=msgspec.json.encode({"error": reason, **extra}).decode(), content_type="application/json")


# On an answer whose command is on the log although the answer could not show it: the
# Idempotency-Key record keeps it (services.api.idempotency), so a retry does not do it twice.
RECORDED_HEADER = "X-Relaydesk-Recorded-Seq"


class ViewBehind(ApiError):
    """The command is recorded (event ``seq``), but this API's view has not read it yet."""

    def __init__(self, seq: int) -> None:
        super().__init__(
            503,
            f"recorded as event {seq}, but this API's view of the log is behind and does not show it yet: "
            "the change is made; read it back in a moment (sending it again would make it again, unless "
            "with the same Idempotency-Key)",
            recorded_seq=seq,
        )
        self.headers["Retry-After"] = "5"
        self.headers[RECORDED_HEADER] = str(seq)


# The largest stream sequence a cursor may name (a signed 64-bit integer, as SQLite and
# PostgreSQL store one).
MAX_SEQ = 2**63 - 1
# The most records a list read whole from a bucket answers at once (?limit= of /v1/deliveries, /v1/dlq).
MAX_RECORDS = 10_000


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int = MAX_SEQ) -> int:
    """The integer query parameter ``name`` within ``low..high``, else ``ApiError`` 400 naming
    it (a cursor too large for the database was a 500)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} goes from {low} to {high}")
    return value


# Fields a handler checks itself, with a refusal of its own that names the field: what it takes
# is declared to the OpenAPI document only (``extra_json_schema``; decoding does not check it).
# Found by a fuzzing audit (schemathesis): ``"status": ""`` and ``"tier": 0`` fit the document
# and were refused. Their values come from the code that checks them.
AGENT_STATUSES: tuple[str, ...] = get_args(AgentStatus)
TIERS = range(1, 4)  # 1 frontline, 2 specialist, 3 supervisor
StatusField = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(AGENT_STATUSES)})]
TierField = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": TIERS.start, "maximum": TIERS.stop - 1})]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every JSON request body decodes into: a field the endpoint does not know (a typo,
    a field of another endpoint) is 400 ``Object contains unknown field``, never ignored."""


class EmptyBody(Body):
    """The body of a command that takes no fields: ``{}`` or none at all."""


B = TypeVar("B", bound=Body)


async def read_body(request: web.Request, kind: type[B]) -> B:
    if not kind.__struct_config__.forbid_unknown_fields:  # a subclass turned it off
        raise TypeError(f"{kind.__name__} must forbid unknown fields")
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as err:
        raise ApiError(400, f"invalid body: {err}") from err
    except msgspec.DecodeError as err:
        raise ApiError(400, "body is not valid JSON") from err


def loggable_path(request: web.Request) -> str:
    """``request.path`` with a route's ``{identity}`` (an address: ``DELETE
    /v1/customers/{id}/identities/{identity}``) masked as ``services.identity.addresses.mask`` does."""
    identity = request.match_info.get("identity")
    return request.path.replace(identity, mask(identity)) if identity else request.path
