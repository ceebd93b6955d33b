"""Customers: find, search and read them, page through their timeline, set their profile,
link addresses to them, merge two of them and erase one (``services.customers`` does the work)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, UnsetType

from events import subjects
from events.model import CHANNEL_PATTERN, CHANNELS, CustomerProfileUpdated
from events.personal import CustomerKeys
from events.store import ConcurrencyError, StoredEvent
from services.api import attachments, workspace
from services.api import customer_panel as panel
from services.api.common import (
    ACTOR,
    ApiDeps,
    Body,
    is_operator,
    json_error,
    name_problem,
    ok,
    query_int,
    read_body,
)
from services.customers import CustomerError, Customers, Profile
from services.customers.erase import Eraser, ErasureTargets
from services.customers.export import export_customer
from services.customers.facts import fold_facts
from services.customers.service import KNOWN_FLAGS, check_customer_id
from services.customers.unlink import unlink
from services.identity.addresses import InvalidAddress

__all__ = ["KNOWN_FLAGS", "routes"]

log = structlog.get_logger(__name__)

# Attempts at a guarded profile append before answering 409 (other changes kept landing first).
PROFILE_CONFLICT_RETRIES = 5

# A timeline filters by any channel name (a connector package may bring its own channel);
# a string that cannot be one is refused.
CHANNEL_NAME = re.compile(CHANNEL_PATTERN)


class ProfileBody(Body):
    """``PUT`` and ``PATCH /v1/customers/{id}``: only the fields named change; ``null`` clears
    a nullable one. A misspelt field is refused (400) rather than ignored."""

    tier: str | UnsetType = UNSET
    flags: tuple[str, ...] | UnsetType = UNSET  # replaces the customer's flags
    preferred_language: str | UnsetType | None = UNSET
    crm_id: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET

    def named(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET}


class LinkBody(Body):
    identity: str
    merge: bool = False


class MergeBody(Body):
    other: str


class EraseBody(Body):
    reason: str = ""


class UnlinkBody(Body):
    reason: str = ""


def _refusal(err: CustomerError) -> web.Response:
    return json_error(err.status, err.reason, **err.extra)


def _last_profile(stored: list[StoredEvent]) -> CustomerProfileUpdated | None:
    profiles = [e.event for e in stored if isinstance(e.event, CustomerProfileUpdated)]
    return profiles[-1] if profiles else None


def _profile_of(event: CustomerProfileUpdated) -> dict[str, Any]:
    """What ``PUT``/``PATCH`` answer: the whole profile now."""
    return {
        "customer_id": event.customer_id,
        "tier": event.tier,
        "flags": list(event.flags),
        "preferred_language": event.preferred_language,
        "crm_id": event.crm_id,
        "name": event.name,
    }


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    customers = Customers(deps.store, deps.directory, deps.policy, deps.clock, appended=deps.shows)
    workspace_facts = workspace.of(deps.live, deps.store)
    links = attachments.links_for(deps)

    @r.get("/v1/customers")
    async def find_customers(request: web.Request) -> web.Response:
        """``?identity=<channel>:<address>`` (exact, from the identity index) or ``?q=``
        (substring of the id, any identity or the CRM id; ``&tier=``, ``&limit=``)."""
        raw = request.query.get("identity")
        if raw is not None:
            try:
                identity = deps.directory.parse(raw)
            except InvalidAddress as err:
                return json_error(400, str(err))
            customer_id = await deps.directory.lookup(identity)
            # Intake names a new customer in the directory a moment before its first event is
            # on the log: until then every other endpoint answers 404 for that id, so this does too.
            if customer_id is None or not (await customers.facts(customer_id)).exists:
                return json_error(404, "no customer with that identity")
            customer_id = await customers.survivor(customer_id)
            return ok({"customers": [{"customer_id": customer_id, "identity": identity}]})
        if "q" not in request.query and "tier" not in request.query:
            return json_error(400, "give ?identity=<channel>:<address> (e.g. sms:+15551234567) or ?q=<text>")
        if deps.timelines is None:
            return json_error(503, "timelines are not available in this process")
        limit = query_int(request, "limit", 100, low=1, high=1000)
        q = request.query.get("q") or None
        tier = request.query.get("tier") or None
        if tier is not None and tier not in deps.policy.customer_tiers:
            return json_error(400, f"unknown tier {tier!r}", tiers=sorted(deps.policy.customer_tiers))
        found = await _survivors(await deps.timelines.customers(q=q, tier=tier, limit=limit), tier)
        exact = await _by_address(q) if q is not None else None
        known = {c.customer_id for c in found}
        if exact is not None and exact.customer_id not in known and tier in (None, exact.tier):
            found = [exact, *found][:limit]
        return ok({"customers": msgspec.to_builtins(found), "count": len(found)})

    async def _survivors(found: list[Any], tier: str | None) -> list[Any]:
        """Each customer found, or the one it was merged into (found once): the search must
        not answer with a customer the identity lookup says is gone (found by an audit)."""
        assert deps.timelines is not None
        out: dict[str, Any] = {}
        for summary in found:
            survivor = deps.live.state.merge_chain(summary.customer_id)[-1]
            if survivor in out:
                continue
            if survivor != summary.customer_id:
                summary = await deps.timelines.customer(survivor)
                if summary is None or (tier is not None and summary.tier != tier):
                    continue
            out[survivor] = summary
        return list(out.values())

    async def _by_address(q: str) -> Any:
        """``q`` written as an address (``email:ann@example.com``): its customer, found through
        the identity index, which also knows addresses linked by operators and imports."""
        if ":" not in q or deps.timelines is None:
            return None
        try:
            identity = deps.directory.parse(q)
        except InvalidAddress:
            return None
        owner = await deps.directory.lookup(identity)
        return await deps.timelines.customer(await customers.survivor(owner)) if owner else None

    @r.get("/v1/customers/{id}")
    async def get_customer(request: web.Request) -> web.Response:
        """Profile, identities (also those of customers merged into it), merged_into."""
        customer_id = request.match_info["id"]
        try:
            check_customer_id(customer_id)
            stored = await customers.read_subject(subjects.customer_scope(customer_id))
        except CustomerError as err:
            return _refusal(err)
        facts = fold_facts(customer_id, stored)
        profile = _last_profile(stored)
        summary = await deps.timelines.customer(customer_id) if deps.timelines is not None else None
        if summary is None and not facts.exists:
            return json_error(404, f"no customer {customer_id}")
        body: dict[str, Any] = {"customer_id": customer_id, "identities": [], "merged": [], "merged_into": None}
        if summary is not None:
            body.update(msgspec.to_builtins(summary))
        if facts.profiled or summary is None:
            # The log's profile is never behind the projection's.
            body.update(
                tier=facts.profile.tier,
                flags=list(facts.profile.flags),
                preferred_language=facts.profile.preferred_language,
                crm_id=facts.profile.crm_id,
            )
        # The log's addresses (it is never behind the projection), and the projection's but for
        # one the log says was taken away (the projection may not have folded that yet).
        family = await customers.family(customer_id)
        unlinked = {i for member in family for i in member.unlinked}
        on_log = {i for member in family for i in member.identities}
        body["identities"] = sorted({*(i for i in body["identities"] if i not in unlinked), *on_log})
        body["merged_into"] = await deps.directory.merged_into(customer_id) or body.get("merged_into")
        # The console's customer panel (services.api.customer_panel).
        state = deps.live.state
        body["name"] = panel.display_name(workspace_facts, state, customer_id, profile.name if profile else None)
        body["crm_url"] = panel.crm_url(deps.console.crm_url_template, body.get("crm_id"))
        body["conversations"] = await panel.conversations(deps.timelines, state, customer_id)
        if facts.erased or body.get("erased"):
            # Nothing personal is left to show: no addresses, no CRM id, no name.
            body.update(erased=True, identities=[], crm_id=None, name=None, crm_url=None)
        return ok(body)

    @r.get("/v1/customers/{id}/timeline")
    async def timeline(request: web.Request) -> web.Response:
        """Entries in sequence order, paged by ``?after=`` and ``&limit=``, ``&channel=``. A
        merged-away customer is still served: its own part (the survivor's timeline has all)."""
        if deps.timelines is None:
            return json_error(503, "timelines are not available in this process")
        customer_id = request.match_info["id"]
        after = query_int(request, "after", 0)
        limit = query_int(request, "limit", 100, low=1, high=1000)
        channel = request.query.get("channel") or None  # empty: every channel
        if channel is not None and not CHANNEL_NAME.match(channel):
            return json_error(
                400,
                f"not a channel name: {channel!r} (built-in: {', '.join(CHANNELS)}; connectors may add their own)",
                channels=list(CHANNELS),
            )
        # Known to the projection, or (the projection may be behind) to the log: the same test
        # as GET /v1/customers/{id}. Merged customers keep their rows and their log.
        if await deps.timelines.customer(customer_id) is None:
            try:
                facts = await customers.facts(customer_id)
            except CustomerError as err:
                return _refusal(err)
            if not facts.exists:
                return json_error(404, f"no customer {customer_id}")
        entries = await deps.timelines.timeline(customer_id, after=after, limit=limit, channel=channel)
        items = links.with_urls(msgspec.to_builtins(entries), request[ACTOR])  # attachments.py
        next_after = items[-1]["seq"] if len(items) == limit else None
        return ok({"customer_id": customer_id, "entries": items, "next_after": next_after})

    async def change_profile(request: web.Request) -> web.Response:
        """The customer's last ``CustomerProfileUpdated`` (it carries the whole profile) with the
        named fields changed, appended guarded by the ``_customer`` subject's last sequence:
        what the body does not name is kept, also when two changes race."""
        customer_id = request.match_info["id"]
        body = await read_body(request, ProfileBody)
        changes = body.named()
        if isinstance(body.name, str) and (problem := name_problem(body.name)):
            return json_error(400, problem)
        language = changes.get("preferred_language")
        if language is not None and (refusal := deps.registry.unknown_languages([language])):
            return json_error(400, refusal.reason, **refusal.extra("language"))
        try:
            check_customer_id(customer_id)
            into = await deps.directory.merged_into(customer_id)
            if into is not None:
                return json_error(
                    409, f"{customer_id} was merged into {into}; update that customer instead", merged_into=into
                )
            for _ in range(PROFILE_CONFLICT_RETRIES):
                stored = await customers.read_subject(subjects.customer_scope(customer_id))
                facts = fold_facts(customer_id, stored)
                if not facts.exists:
                    return json_error(404, f"no customer {customer_id}")
                if facts.erased:
                    return json_error(410, f"customer {customer_id} was erased")
                current = _last_profile(stored) or CustomerProfileUpdated(at=deps.clock(), customer_id=customer_id)
                event = msgspec.structs.replace(current, **changes, at=deps.clock(), actor=request[ACTOR])
                customers.check_profile(Profile(event.tier, tuple(event.flags), event.preferred_language, event.crm_id))
                if facts.profiled and _profile_of(event) == _profile_of(current):
                    return ok(_profile_of(event))  # nothing changes: nothing appended
                try:
                    await deps.append(event, facts.last_seq)
                except ConcurrencyError:
                    continue  # another change landed first: apply ours to it
                log.info(
                    "api.customer_profile_changed",
                    customer_id=customer_id,
                    fields=sorted(changes),
                    actor=request[ACTOR],
                )
                return ok(_profile_of(event))
        except CustomerError as err:
            return _refusal(err)
        return json_error(409, "the customer kept changing meanwhile; try again")

    @r.put("/v1/customers/{id}")
    async def put_profile(request: web.Request) -> web.Response:
        """Tier, flags, preferred language, CRM id and name: the router sees a change at once."""
        return await change_profile(request)

    @r.patch("/v1/customers/{id}")
    async def patch_profile(request: web.Request) -> web.Response:
        return await change_profile(request)

    @r.post("/v1/customers/{id}/identities")
    async def link_identity(request: web.Request) -> web.Response:
        """``{"identity": "email:ann@example.com", "merge": false}``: 409 when the address
        belongs to another customer, unless ``merge`` (then that customer is merged in)."""
        body = await read_body(request, LinkBody)
        try:
            result = await customers.link(request.match_info["id"], body.identity, request[ACTOR], merge=body.merge)
        except CustomerError as err:
            return _refusal(err)
        return ok(result)

    @r.delete("/v1/customers/{id}/identities/{identity}")
    async def unlink_identity(request: web.Request) -> web.Response:
        """Take an address away (``{"reason": "…"}`` or ``?reason=``, optional): the next message
        from it starts a new customer. Again: 200 with ``already_unlinked``."""
        # What fails beyond a refusal is answered by the outer middlewares, which log the path
        # with its address masked (``common.loggable_path``).
        body = await read_body(request, UnlinkBody)
        reason = body.reason or request.query.get("reason", "")
        try:
            result = await unlink(
                customers,
                request.match_info["id"],
                request.match_info["identity"],
                request[ACTOR],
                reason=reason,
                targets=ErasureTargets.from_connectors(deps.connectors),
            )
        except CustomerError as err:
            return _refusal(err)
        return ok(result)

    @r.delete("/v1/customers/{id}")
    async def erase_customer(request: web.Request) -> web.Response:
        """Erasure on request (operator only): ``{"reason": "…"}`` or ``?reason=`` (400 without).
        The customer and every customer merged into it; 404 for an unknown customer; asking
        again answers the same way (``already_erased``) and removes whatever was left."""
        if not is_operator(request):
            return json_error(403, "only an operator may erase a customer")
        body = await read_body(request, EraseBody)
        reason = (body.reason or request.query.get("reason", "")).strip()
        cipher = deps.store.cipher
        keys = cipher.keys if cipher is not None else CustomerKeys(deps.store.js)
        # The chat history and attachment bucket the connectors were configured with (found while
        # adding the export: the API erased and read the default ones whatever the config said).
        targets = ErasureTargets.from_connectors(deps.connectors)
        try:
            report = await Eraser(customers, keys, targets).erase(request.match_info["id"], reason, request[ACTOR])
        except CustomerError as err:
            return _refusal(err)
        return ok(report.to_json())

    @r.get("/v1/customers/{id}/export")
    async def export(request: web.Request) -> web.Response:
        """Everything held about the customer and the customers merged into it (operator only:
        a subject access request, GDPR Art. 15; ``services.customers.export``). Reads only."""
        if not is_operator(request):
            return json_error(403, "only an operator may export a customer's data")
        # The chat history and attachment bucket the connectors were configured with (found while
        # adding the export: the API erased and read the default ones whatever the config said).
        targets = ErasureTargets.from_connectors(deps.connectors)
        try:
            found = await export_customer(
                customers, deps.store.js, request.match_info["id"], request[ACTOR], now=deps.clock(), targets=targets
            )
        except CustomerError as err:
            return _refusal(err)
        return ok(found.to_json())

    @r.post("/v1/customers/{id}/merge")
    async def merge_customers(request: web.Request) -> web.Response:
        """``{"other": "<customer id>"}``: the other customer is merged into this one."""
        body = await read_body(request, MergeBody)
        try:
            result = await customers.merge(request.match_info["id"], body.other, request[ACTOR])
        except CustomerError as err:
            return _refusal(err)
        return ok(result)

    return r
