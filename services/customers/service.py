"""Customers as operators manage them: link an address, merge two customers, set a profile.

The log is the truth: a customer's identities are its ``CustomerCreated`` identity and its
``IdentityLinked`` events, its profile its last ``CustomerProfileUpdated``, and the customers
merged into it its ``CustomersMerged`` events, all on ``rd.evt.c.<customer>._customer``. The
``rd_identity`` bucket is the index intake resolves addresses with: a link claims an address
create-only, a merge moves the merged customer's addresses to the survivor. A merge is written
as ONE ``CustomersMerged`` on the survivor's subject; nothing is rewritten, and the router, the
timelines and intake read the merged customer's history through the survivor. What one
customer's ``_customer`` subject says, folded (``CustomerFacts``, ``Profile``), is ``facts.py``.

Used by the API (``services.api.customers``) and the CLI (``relaydesk customers ...``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.js.errors import NotFoundError

from events import subjects
from events.model import CustomerCreated, CustomerProfileUpdated, CustomersMerged, IdentityLinked, LogEvent
from events.store import Append, ConcurrencyError, EventStore, StoredEvent
from router.policy import RouterPolicy
from services.customers.facts import CustomerFacts, Profile, fold_facts
from services.identity import IdentityDirectory
from services.identity.addresses import InvalidAddress, mask

log = structlog.get_logger(__name__)

KNOWN_FLAGS = ("regulatory_risk", "media_attention", "executive_escalation")
CONFLICT_RETRIES = 5


class CustomerError(Exception):
    """A refusal with an HTTP status and a reason (and extra JSON fields)."""

    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def check_customer_id(customer_id: str) -> str:
    try:
        return subjects.token(customer_id)
    except subjects.InvalidToken as err:
        raise CustomerError(400, "not a customer id") from err


@dataclass
class Customers:
    store: EventStore
    directory: IdentityDirectory
    policy: RouterPolicy = field(default_factory=RouterPolicy)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Called with the sequence of each append (the API waits until its live view has it).
    appended: Callable[[int], Awaitable[object]] | None = None

    # -- reading ------------------------------------------------------------------------

    async def facts(self, customer_id: str) -> CustomerFacts:
        check_customer_id(customer_id)
        return fold_facts(customer_id, await self.read_subject(subjects.customer_scope(customer_id)))

    async def read_subject(self, subject: str) -> list[StoredEvent]:
        """Every event on one subject, by direct gets ("next message on this subject"): a
        ``_customer`` subject holds a handful of events, and an import reads thousands of
        them, more than ephemeral consumers (one per ``EventStore.read``) should be made for."""
        out: list[StoredEvent] = []
        seq = 1
        while True:
            try:
                raw = await self.store.js.get_msg(
                    subjects.EVENTS_STREAM, seq=seq, subject=subject, next=True, direct=True
                )
            except NotFoundError:
                return out
            if not raw.seq or raw.data is None:
                return out
            out.append(await self.store.decoded(int(raw.seq), raw.subject or subject, raw.data, raw.headers))
            seq = int(raw.seq) + 1

    async def existing(self, customer_id: str) -> CustomerFacts:
        facts = await self.facts(customer_id)
        if not facts.exists:
            raise CustomerError(404, f"no customer {customer_id}")
        if facts.erased:
            raise CustomerError(410, f"customer {customer_id} was erased")
        return facts

    async def family(self, customer_id: str) -> list[CustomerFacts]:
        """The customer and every customer merged into it, merges of merges included."""
        out: list[CustomerFacts] = []
        todo, seen = [customer_id], {customer_id}
        while todo:
            facts = await self.facts(todo.pop(0))
            out.append(facts)
            for merged in facts.merged:
                if merged not in seen:
                    seen.add(merged)
                    todo.append(merged)
        return out

    async def identities(self, customer_id: str) -> list[str]:
        """Every address of the customer and of the customers merged into it (from the log)."""
        found = {i for facts in await self.family(customer_id) for i in facts.identities}
        return sorted(found)

    async def survivor(self, customer_id: str) -> str:
        """The customer that stands for ``customer_id`` now (itself unless merged away)."""
        current = customer_id
        for _ in range(64):
            into = await self.directory.merged_into(current)
            if into is None:
                return current
            current = into
        return current

    async def not_merged_away(self, customer_id: str, doing: str) -> None:
        into = await self.directory.merged_into(customer_id)
        if into is not None:
            raise await self._merged_into(customer_id, into, doing=doing)

    async def _merged_into(
        self, customer_id: str, into: str, *, already: str = "", doing: str | None = None
    ) -> CustomerError:
        """409: ``customer_id`` was merged into ``into``, naming the customer that stands for it
        now (after a chain of merges, A into B then B into C, "merge into B instead" was refused
        in turn: found by a merges audit); ``doing``: what to do with that one instead."""
        now = await self.survivor(into)
        text = f"{customer_id} was {already}merged into {into}" + ("" if now == into else f" (since merged into {now})")
        if doing is not None:
            text += f"; {doing} {now} instead"
        return CustomerError(409, text, merged_into=into, survivor=now)

    # -- writing ------------------------------------------------------------------------

    async def append(self, event: LogEvent, expected: int | None, expected_subject: str | None = None) -> int:
        seq = await self.store.append(Append(event, expected=expected, expected_subject=expected_subject))
        if self.appended is not None:
            await self.appended(seq)
        return seq

    def check_profile(self, profile: Profile) -> None:
        if profile.tier not in self.policy.customer_tiers:
            raise CustomerError(400, f"unknown tier {profile.tier!r}", tiers=sorted(self.policy.customer_tiers))
        unknown = sorted(set(profile.flags) - set(KNOWN_FLAGS) - set(self.policy.priority_flags))
        if unknown:
            raise CustomerError(
                400, f"unknown flags {unknown}", flags=sorted({*KNOWN_FLAGS, *self.policy.priority_flags})
            )

    async def set_profile(
        self, customer_id: str, profile: Profile, actor: str, *, only_if_changed: bool = False
    ) -> bool:
        """Append ``CustomerProfileUpdated`` (the router sees it at once). Returns whether it
        was written (``only_if_changed``: not when the profile already is exactly this)."""
        self.check_profile(profile)
        facts = await self.existing(customer_id)
        if only_if_changed and facts.profile == profile:
            return False
        event = CustomerProfileUpdated(
            at=self.clock(),
            customer_id=customer_id,
            tier=profile.tier,
            flags=profile.flags,
            preferred_language=profile.preferred_language,
            crm_id=profile.crm_id,
            name=profile.name,
            actor=actor,
        )
        try:
            await self.append(event, facts.last_seq)
        except ConcurrencyError as err:
            raise CustomerError(409, "the customer changed meanwhile; try again") from err
        return True

    async def create(self, customer_id: str, identity: str, actor: str = "") -> bool:
        """Write ``CustomerCreated`` for a customer whose first address was just claimed,
        unless it exists already (intake may have written it meanwhile). Returns whether
        this call wrote it."""
        for _ in range(CONFLICT_RETRIES):
            facts = await self.facts(customer_id)
            if facts.created:
                return False
            try:
                # Guarded on the _customer subject, where intake writes CustomerCreated too:
                # whoever comes second re-reads and finds the customer created.
                await self.append(
                    CustomerCreated(at=self.clock(), customer_id=customer_id, identity=identity), facts.last_seq
                )
            except ConcurrencyError:
                continue
            return True
        raise CustomerError(409, f"customer {customer_id} kept changing; try again")

    async def link(self, customer_id: str, raw_identity: str, actor: str, *, merge: bool = False) -> dict[str, Any]:
        """Give an address to a customer. An address of another customer is refused (409)
        unless ``merge``: then that customer is merged into this one."""
        check_customer_id(customer_id)
        try:
            identity = self.directory.parse(raw_identity)
        except InvalidAddress as err:
            raise CustomerError(400, str(err)) from err
        await self.existing(customer_id)
        await self.not_merged_away(customer_id, "link to")
        owner = await self.directory.claim(identity, customer_id)
        merged: str | None = None
        if owner != customer_id:
            owner = await self.survivor(owner)
            if owner == customer_id:
                await self.directory.link(identity, customer_id)  # a pointer the merge left behind
            elif merge:
                await self.merge(customer_id, owner, actor)
                merged = owner
            else:
                raise CustomerError(
                    409,
                    "that address belongs to another customer: link it with merge (API: merge true, CLI: --merge)"
                    " to merge that customer into this one",
                    customer_id=owner,
                )
        if await self.directory.erased(customer_id) is not None:
            # An erasure of this customer began meanwhile: it marks the family before it removes
            # the addresses, so one given to it after that removal is taken back here.
            await self.directory.forget_if(identity, customer_id)
            await self.not_being_erased(customer_id)
        linked = await self._record_link(customer_id, identity, actor)
        log.info("customers.linked", customer_id=customer_id, identity=mask(identity), merged=merged, new=linked)
        return {
            "customer_id": customer_id,
            "identity": identity,
            "linked": linked or merged is not None,
            "merged": merged,
        }

    async def _record_link(self, customer_id: str, identity: str, actor: str) -> bool:
        """``IdentityLinked`` unless the customer (or its family) has the address already."""
        for _ in range(CONFLICT_RETRIES):
            family = await self.family(customer_id)
            if any(identity in facts.identities for facts in family):
                return False
            event = IdentityLinked(at=self.clock(), customer_id=customer_id, identity=identity, actor=actor)
            try:
                await self.append(event, family[0].last_seq)
            except ConcurrencyError:
                continue
            return True
        raise CustomerError(409, "the customer changed meanwhile; try again")

    async def merge(self, survivor: str, other: str, actor: str) -> dict[str, Any]:
        """Merge ``other`` into ``survivor``: one ``CustomersMerged`` on the survivor's subject,
        then the other customer's addresses (and those of customers merged into it) point at
        the survivor. The survivor's profile stands."""
        check_customer_id(survivor)
        check_customer_id(other)
        if survivor == other:
            raise CustomerError(400, "a customer cannot be merged into itself")
        await self.existing(survivor)
        await self.existing(other)
        await self.not_being_erased(survivor, other)
        on_record = await self.directory.merged_into(other)
        if on_record == survivor and (done := (await self.facts(survivor)).merge_seqs.get(other)):
            return await self._merged_already(survivor, other, done)
        await self.not_merged_away(survivor, "merge into")
        if on_record is not None:
            if on_record != survivor:
                raise await self._merged_into(other, on_record, already="already ")
            # A merge that stopped between the marker and the event (a crash): finish it.
        else:
            on_record = await self.directory.mark_merged(other, survivor)
            if on_record != survivor:
                raise await self._merged_into(other, on_record, already="already ")
        try:
            seq = await self._append_merge(survivor, other, actor)
        except BaseException:
            await self.directory.unmark_merged(other)
            raise
        if seq is None:  # the same merge, sent twice at once: the other one wrote it (its marker stays)
            return await self._merged_already(survivor, other, (await self.facts(survivor)).merge_seqs.get(other, 0))
        moved = await self._move_identities(survivor, other)
        log.info("customers.merged", customer_id=survivor, merged_id=other, identities_moved=len(moved), seq=seq)
        return _merge_answer(survivor, other, moved, seq, already_merged=False)

    async def _merged_already(self, survivor: str, other: str, seq: int) -> dict[str, Any]:
        """The same merge asked again (a retry, a second operator, a script run twice): nothing
        new is written, and the answer says it was done already. Its addresses are pointed at
        the customer that stands for the family now, which finishes a merge cut short between
        its event and moving them (found by a merges audit: asking again was refused 409
        "already merged" and the addresses kept resolving to the merged-away customer for good)."""
        moved = await self._move_identities(await self.survivor(survivor), other)
        log.info("customers.merge_repeated", customer_id=survivor, merged_id=other, identities=len(moved), seq=seq)
        return _merge_answer(survivor, other, moved, seq, already_merged=True)

    async def _append_merge(self, survivor: str, other: str, actor: str) -> int | None:
        """The merge's sequence; None when the survivor's subject holds this merge already: a
        concurrent request for the same merge wrote it between the checks and this append
        (found by a retry audit: two merges sent at once both answered 200 and wrote two
        ``CustomersMerged``; one after the other, the second is 409 "already merged")."""
        for _ in range(CONFLICT_RETRIES):
            facts = await self.existing(survivor)
            if other in facts.merged:
                return None
            event = CustomersMerged(at=self.clock(), customer_id=survivor, merged_id=other, actor=actor)
            try:
                return await self.append(event, facts.last_seq)
            except ConcurrencyError:
                continue
        raise CustomerError(409, "the customer changed meanwhile; try again")

    async def not_being_erased(self, *customer_ids: str) -> None:
        """410 when one of them is marked erased (``IdentityDirectory.mark_erased``): its
        family's erasure began, though ``CustomerErased`` may not be on the log yet."""
        erased = await self.directory.erased(*customer_ids)
        if erased is not None:
            raise CustomerError(410, f"customer {erased} is being erased or was erased", erased=erased)

    async def _move_identities(self, survivor: str, other: str) -> list[str]:
        """Point ``other``'s addresses at ``survivor``, unless either family is being erased.

        Checked before and again after: an erasure marks its family before it removes the
        addresses, so a merge that pointed them at an erased family after that removal sees the
        mark when it looks again, and takes them back (found by a merges audit: a merge racing
        an erasure put the mappings back, and the next message from such an address was
        recorded on the erased customer)."""
        await self.not_being_erased(survivor, other)
        moved = await self.identities(other)
        for identity in moved:
            await self.directory.link(identity, survivor)
        if await self.directory.erased(survivor, other) is not None:
            for identity in moved:
                await self.directory.forget_if(identity, survivor)
            log.warning("customers.merge_met_erasure", customer_id=survivor, merged_id=other, identities=len(moved))
            await self.not_being_erased(survivor, other)
        return moved


def _merge_answer(survivor: str, other: str, moved: list[str], seq: int, *, already_merged: bool) -> dict[str, Any]:
    """What a merge answers (POST /v1/customers/{id}/merge, relaydesk customers merge)."""
    return {
        "customer_id": survivor,
        "merged_id": other,
        "identities_moved": moved,
        "seq": seq,
        "already_merged": already_merged,
    }
