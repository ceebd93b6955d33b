"""Agent bearer tokens: issued by operators, stored hashed in the log, revocable.

The token table is the fold of ``AgentTokenIssued`` / ``AgentTokenRevoked`` on
``rd.evt.a.>``; a restarted API rebuilds it by reading those subjects again. A token is
``rdat_`` followed by 43 url-safe characters (256 random bits); only its sha256 is kept.

Anything with NATS access could publish an ``AgentTokenIssued`` of its own making, so the
event carries a ``proof``: an HMAC-SHA256 by the API, with its signing key (``[api]
signing_key``, generated once by ``relaydesk up``), over agent id, token id, token hash and
(for any role but ``agent``) the role. The table ignores (logs and counts) a token without a
valid proof: a forged one never authenticates, a role written into the event by anyone but
the API fails the proof, and rotating the signing key invalidates every token issued before.
Tokens issued before roles existed are agent tokens, and their proof (without a role) holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated

import msgspec
import structlog
from aiohttp import web
from prometheus_client import Counter

from connectors.sdk.signatures import first_match
from events.model import AgentTokenIssued, AgentTokenRevoked
from events.store import StoredEvent
from services.api.common import ACTOR, ApiDeps, Body, is_operator, json_error, name_problem, ok, read_body
from services.api.operators import hash_token
from services.api.readmodel import LiveState

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "rdat_"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43  # 32 random bytes, url-safe base64 without padding
PROOF_CONTEXT = "relaydesk agent token v1"
ROLE_PROOF_CONTEXT = "relaydesk token with role v2"
ROLES = ("agent", "supervisor")

TOKENS_REFUSED = Counter(  # the API's alone: registered by build_app (services.metrics.measured)
    "relaydesk_agent_tokens_refused_total",
    "AgentTokenIssued events on the log the API ignored: no valid proof by its signing key",
    registry=None,
)


def signing_key(configured: str, operator_token: str) -> bytes:
    """The key agent tokens are signed with: the configured one, else one derived from the
    operator token (then rotating the operator token invalidates agent tokens too)."""
    if configured:
        return configured.encode()
    return hmac.new(operator_token.encode(), b"relaydesk api signing key v1", hashlib.sha256).digest()


def accepted_keys(deps: ApiDeps) -> list[bytes]:
    """The keys what the API signed is checked with: the one it signs with, then ``[api]
    extra_signing_keys`` (the old key while rotating: tokens, sessions, idempotency records and
    file links it signed stay good until it is taken out)."""
    extra: tuple[str, ...] = getattr(deps, "extra_signing_keys", ())  # a test's stand-in may lack it
    return [signing_key(deps.signing_key, deps.token), *(key.encode() for key in extra if key)]


def token_proof(key: bytes, agent_id: str, token_id: str, token_hash: str, role: str = "agent") -> str:
    """HMAC-SHA256 over the token's identity and role, unambiguous whatever the ids hold. An
    agent token's message is the one used before roles existed, so those tokens stay valid."""
    if role == "agent":
        message = msgspec.json.encode([PROOF_CONTEXT, agent_id, token_id, token_hash])
    else:
        message = msgspec.json.encode([ROLE_PROOF_CONTEXT, agent_id, token_id, token_hash, role])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class TokenRecord:
    agent_id: str
    token_id: str
    token_hash: str
    label: str
    issued_at: str
    revoked: bool = False
    role: str = "agent"  # or "supervisor" (services.api.access)


class TokenTable:
    """The fold of agent tokens, by hash. It reads nothing itself: the API's ``LiveState``
    hands it every event (``install``), so tokens issued before a restart count at once.
    Only tokens whose proof checks with ``key`` count (see the module docstring)."""

    def __init__(self, key: bytes, *extra: bytes) -> None:
        self.key = key
        self.extra = extra  # [api] extra_signing_keys: proofs by these hold too
        self.by_hash: dict[str, TokenRecord] = {}
        self.by_id: dict[str, TokenRecord] = {}
        self.refused = 0

    def proof(self, agent_id: str, token_id: str, token_hash: str, role: str = "agent") -> str:
        return token_proof(self.key, agent_id, token_id, token_hash, role)

    def _refuse(self, stored: StoredEvent, event: AgentTokenIssued, reason: str) -> None:
        self.refused += 1
        TOKENS_REFUSED.inc()
        log.warning(
            "api.agent_token_refused",
            reason=reason,
            agent_id=event.agent_id,
            token_id=event.token_id,
            seq=stored.seq,
            subject=stored.subject,
            actor=event.actor,
        )

    def apply(self, stored: StoredEvent) -> None:
        event = stored.event
        if isinstance(event, AgentTokenIssued):
            role = event.role
            given = event.proof.encode()

            def proven(key: bytes) -> bool:
                expected = token_proof(key, event.agent_id, event.token_id, event.token_hash, role)
                return hmac.compare_digest(given, expected.encode())

            if first_match((self.key, *self.extra), proven) is None:
                self._refuse(stored, event, "no valid proof: not issued by this API, or before its signing key changed")
                return
            if role not in ROLES:
                self._refuse(stored, event, f"unknown role {role!r}")
                return
            if event.token_id in self.by_id:
                # A copy of an earlier issue (say, replayed after its revocation) revives nothing.
                self._refuse(stored, event, "token id issued before")
                return
            record = TokenRecord(
                event.agent_id, event.token_id, event.token_hash, event.label, event.at.isoformat(), role=role
            )
            self.by_hash[event.token_hash] = record
            self.by_id[event.token_id] = record
        elif isinstance(event, AgentTokenRevoked):
            found = self.by_id.get(event.token_id)
            if found is not None and found.agent_id == event.agent_id:
                found.revoked = True
                self.by_hash.pop(found.token_hash, None)

    def dump(self) -> bytes:
        """For the API view's snapshot (hashes, ids and labels: no token, no personal data)."""
        return msgspec.msgpack.encode([dataclasses.astuple(r) for r in self.by_id.values()])

    def load(self, data: bytes) -> None:
        # Rows saved before roles existed have six fields (the role defaults to agent).
        rows = msgspec.msgpack.decode(data, type=list[list[str | bool]])
        records = [TokenRecord(*row) for row in rows]  # type: ignore[arg-type]
        self.by_id = {r.token_id: r for r in records}
        self.by_hash = {r.token_hash: r for r in records if not r.revoked}

    def agent_for(self, token: str) -> str | None:
        return self.agent_for_hash(hash_token(token))

    def record_for(self, token: str) -> TokenRecord | None:
        """The live (not revoked) record of ``token``."""
        record = self.by_hash.get(hash_token(token))
        return None if record is None or record.revoked else record

    def agent_for_hash(self, token_hash: str) -> str | None:
        """As ``agent_for``, for a caller that checks one token again and again (a live stream)."""
        record = self.by_hash.get(token_hash)
        return None if record is None or record.revoked else record.agent_id

    def of_agent(self, agent_id: str) -> list[TokenRecord]:
        return [r for r in self.by_id.values() if r.agent_id == agent_id]


TOKENS = web.AppKey("agent_tokens", TokenTable)


def install(app: web.Application, table: TokenTable, live: LiveState) -> None:
    """Feed the table from the API's log reader (before it starts)."""
    app[TOKENS] = table
    live.add_fold(table.apply, name="agent_tokens", saved=table)


class IssueBody(Body):
    label: str = ""
    # Checked by the handler (400 naming the roles); its values declared to the document as
    # common.StatusField's are.
    role: Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(ROLES)})] = "agent"


def record_json(record: TokenRecord) -> dict[str, object]:
    return {
        "token_id": record.token_id,
        "agent_id": record.agent_id,
        "label": record.label,
        "issued_at": record.issued_at,
        "revoked": record.revoked,
        "role": record.role,
    }


def routes(deps: ApiDeps, table: TokenTable) -> web.RouteTableDef:
    r = web.RouteTableDef()

    def operator_only(request: web.Request) -> web.Response | None:
        if not is_operator(request):
            return json_error(403, "only an operator manages agent tokens")
        return None

    @r.post("/v1/agents/{id}/tokens")
    async def issue(request: web.Request) -> web.Response:
        if (refused := operator_only(request)) is not None:
            return refused
        aid = request.match_info["id"]
        if aid not in deps.live.state.agents:
            return json_error(404, f"no agent {aid}")
        body = await read_body(request, IssueBody)
        if body.role not in ROLES:
            return json_error(400, f"role is one of {', '.join(ROLES)}")
        if (why := name_problem(body.label[:200], "label")) is not None:  # shown in the console's token list
            return json_error(400, why)
        token = new_token()
        token_id = "tk_" + uuid.uuid4().hex[:16]
        token_hash = hash_token(token)
        event = AgentTokenIssued(
            at=deps.clock(),
            agent_id=aid,
            token_id=token_id,
            token_hash=token_hash,
            label=body.label[:200],
            actor=request[ACTOR],
            proof=table.proof(aid, token_id, token_hash, body.role),
            role=body.role,
        )
        await deps.append(event, None)
        log.info("api.agent_token_issued", agent_id=aid, token_id=token_id, role=body.role, actor=request[ACTOR])
        answer = record_json(table.by_id[token_id])
        return ok({**answer, "token": token, "note": "shown once; only its hash is kept"}, status=201)

    @r.get("/v1/agents/{id}/tokens")
    async def list_tokens(request: web.Request) -> web.Response:
        if (refused := operator_only(request)) is not None:
            return refused
        aid = request.match_info["id"]
        return ok({"tokens": [record_json(t) for t in table.of_agent(aid)]})

    @r.delete("/v1/agents/{id}/tokens/{token_id}")
    async def revoke(request: web.Request) -> web.Response:
        if (refused := operator_only(request)) is not None:
            return refused
        aid, token_id = request.match_info["id"], request.match_info["token_id"]
        record = table.by_id.get(token_id)
        if record is None or record.agent_id != aid:
            return json_error(404, f"agent {aid} has no token {token_id}")
        if not record.revoked:
            await deps.append(
                AgentTokenRevoked(at=deps.clock(), agent_id=aid, token_id=token_id, actor=request[ACTOR]), None
            )
            log.info("api.agent_token_revoked", agent_id=aid, token_id=token_id, actor=request[ACTOR])
        return ok(record_json(record))

    return r
