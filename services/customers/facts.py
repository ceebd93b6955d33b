"""What a customer's own ``rd.evt.c.<customer>._customer`` subject says, folded (pure):
its addresses (``CustomerCreated``, ``IdentityLinked``, less ``IdentityUnlinked``), its
profile (the last ``CustomerProfileUpdated``), the customers merged into it
(``CustomersMerged``) and whether it was erased (``CustomerErased``).

Read by ``Customers`` (``service.py``) and the API's customer views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from events.model import (
    CustomerCreated,
    CustomerErased,
    CustomerProfileUpdated,
    CustomersMerged,
    IdentityLinked,
    IdentityUnlinked,
)


@dataclass(frozen=True)
class Profile:
    tier: str = "standard"
    flags: tuple[str, ...] = ()
    preferred_language: str | None = None
    crm_id: str | None = None
    name: str | None = None


@dataclass
class CustomerFacts:
    """What a customer's own ``_customer`` subject says."""

    customer_id: str
    last_seq: int = 0  # of rd.evt.c.<customer>._customer (0: no such customer)
    created: bool = False
    identities: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)  # addresses taken away (IdentityUnlinked)
    profile: Profile = field(default_factory=Profile)
    profiled: bool = False  # a CustomerProfileUpdated exists
    merged: list[str] = field(default_factory=list)  # customers merged into this one, directly
    merge_seqs: dict[str, int] = field(default_factory=dict)  # merged customer → its CustomersMerged
    erased: bool = False  # a CustomerErased stands on its subject (this customer was erased)

    @property
    def exists(self) -> bool:
        return self.last_seq > 0


def fold_facts(customer_id: str, events: Sequence[Any]) -> CustomerFacts:
    facts = CustomerFacts(customer_id)
    for stored in events:
        facts.last_seq = max(facts.last_seq, stored.seq)
        e = stored.event
        if isinstance(e, CustomerCreated):
            facts.created = True
            if e.identity not in facts.identities:
                facts.identities.append(e.identity)
        elif isinstance(e, IdentityLinked):
            if e.identity not in facts.identities:
                facts.identities.append(e.identity)
            if e.identity in facts.unlinked:
                facts.unlinked.remove(e.identity)
        elif isinstance(e, IdentityUnlinked):
            if e.identity in facts.identities:
                facts.identities.remove(e.identity)
            if e.identity not in facts.unlinked:
                facts.unlinked.append(e.identity)
        elif isinstance(e, CustomerProfileUpdated):
            facts.profiled = True
            facts.profile = Profile(e.tier, tuple(e.flags), e.preferred_language, e.crm_id, e.name)
        elif isinstance(e, CustomersMerged) and e.merged_id not in facts.merged:
            facts.merged.append(e.merged_id)
            facts.merge_seqs[e.merged_id] = stored.seq
        elif isinstance(e, CustomerErased):
            facts.erased = True
    return facts
