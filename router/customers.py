"""Customers in the routing state: their views, and merges (``CustomersMerged``), which make
one customer follow another without rewriting anything."""

from __future__ import annotations

from router import index
from router.state import CustomerView, RouterState


def customer(state: RouterState, customer_id: str) -> CustomerView:
    found = state.customers.get(customer_id)
    if found is None:
        found = CustomerView()
        state.customers[customer_id] = found
    return found


def survivor(state: RouterState, customer_id: str) -> CustomerView:
    """The view that stands for ``customer_id``: its own, or the survivor's after a merge."""
    found = state.customers.get(customer_id)
    if found is not None and found.merged_into is None:
        return found  # the usual case, with one look-up instead of two
    return customer(state, root_id(state, customer_id))


def root_id(state: RouterState, customer_id: str) -> str:
    current = customer_id
    for _ in range(64):  # merges never form a cycle (``merge`` refuses one); bounded anyway
        view = state.customers.get(current)
        if view is None or view.merged_into is None:
            return current
        current = view.merged_into
    return current


def merge(state: RouterState, survivor_id: str, merged_id: str) -> None:
    """``merged_id`` follows ``survivor_id`` from now on: its open conversations count as the
    survivor's, and the more current case owner of the two stays the owner. The survivor's
    profile (tier, flags, language) stands. A merge into itself, into its own family, or of a
    customer already merged elsewhere changes nothing (the first merge in the log stands)."""
    root = root_id(state, survivor_id)
    if root_id(state, merged_id) == root:
        return
    merged = customer(state, merged_id)
    if merged.merged_into is not None:
        return
    survivor = customer(state, root)
    survivor.open_conversations |= merged.open_conversations
    merged.open_conversations = set()
    if _owner_is_more_current(merged, survivor):
        survivor.last_agent = merged.last_agent
        survivor.last_agent_resolved_at = merged.last_agent_resolved_at
    merged.merged_into = survivor_id
    # The merged customer's waiting conversations now queue with the survivor's tier and flags.
    for conversation_id in sorted(survivor.open_conversations):
        open_conv = state.conversations.get(conversation_id)
        if open_conv is not None and open_conv.status == "waiting":
            index.requeue(state, conversation_id, open_conv)


def _owner_is_more_current(candidate: CustomerView, current: CustomerView) -> bool:
    """An open case beats a resolved one; between resolved ones, the later one wins."""
    if candidate.last_agent is None:
        return False
    if current.last_agent is None:
        return True
    if current.last_agent_resolved_at is None:
        return False
    if candidate.last_agent_resolved_at is None:
        return True
    return candidate.last_agent_resolved_at > current.last_agent_resolved_at
