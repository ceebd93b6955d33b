"""The conversation side of the routing indexes (see ``router.index``): queue signatures,
the queue heaps and their lookups, holds for a preferred agent, and the timers; entries are
removed lazily (``router.heaps``), and each hook marks what decide has to look at again."""

from __future__ import annotations

import heapq
import sys

import msgspec

from router import heaps, queue_refs
from router.index_keys import lookup_key, queue_group
from router.state import ANY, RELAXED, ConversationView, Entry, QueueSignature, RouterState

_key_encoder = msgspec.json.Encoder()


def signature(state: RouterState, conv: ConversationView) -> QueueSignature:
    req = conv.requirements
    customer = state.customer(conv.customer_id)
    return QueueSignature(
        channel=conv.channel,
        skills=tuple(sorted(req.skills.items())),
        language=req.language or (customer.preferred_language if customer else None),
        fallback_languages=tuple(req.fallback_languages),
        min_tier=max(req.min_tier, conv.escalated_tier),
        transfers=min(conv.transfer_count, 100),
        customer_tier=customer.tier if customer else "standard",
        flags=tuple(sorted(set(customer.flags))) if customer else (),
        public=conv.public,
        priority=req.priority,
        step=conv.step,
        explicit_sla=req.sla_due is not None,
    )


def _queue_lookups(sig: QueueSignature) -> list[str]:
    skill, _ = sig.primary_skill()
    keys = [lookup_key(sig.channel, skill, sig.language or ANY)]
    if sig.step > 0:
        # An escalated conversation may accept other languages (policy decides which).
        keys.append(lookup_key(sig.channel, skill, RELAXED))
    return keys


# --- conversations -------------------------------------------------------------------


def conversation_valid(state: RouterState, entry: Entry) -> bool:
    conv = state.conversations.get(entry[1])
    return conv is not None and conv.enqueued == entry[2]


def offer_valid(state: RouterState, entry: Entry) -> bool:
    conv = state.conversations.get(entry[1])
    return conv is not None and conv.enqueued == entry[2] and conv.status == "offered"


def enter_queue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """The conversation is waiting (again): file it in its queue, or hold it for its preferred agent."""
    conv.enqueued += 1
    since = conv.waiting_since.timestamp() if conv.waiting_since else 0.0
    entry: Entry = (since, conversation_id, conv.enqueued)
    if conv.preferred_agent is not None and not conv.preference_dropped:
        heapq.heappush(state.held.setdefault(conv.preferred_agent, []), entry)
        if not state.for_reading:
            heapq.heappush(state.held_timers, entry)
        state.pending.held.add(conversation_id)
        return
    sig = signature(state, conv)
    # Interned: the queue's dicts (and the conversation's ``queue_key``) then share one string,
    # found by identity rather than by comparing ~100 bytes with the copy each dict holds.
    key = sys.intern(_key_encoder.encode(sig).decode())
    queue = state.queues.get(key)
    new = queue is None
    if queue is None:
        queue = state.queues[key] = []
        state.queue_signatures[key] = sig
        state.queue_sizes[key] = 0
        group = queue_group(sig)
        lookups = _queue_lookups(sig)
        for lookup in lookups:
            state.queue_lookup.setdefault(lookup, {}).setdefault(group, set()).add(key)
    due = conv.requirements.sla_due
    queued = (due.timestamp(), conversation_id, conv.enqueued) if due is not None else entry
    heapq.heappush(queue, queued)
    if new:
        queue_refs.queue_filed(state, key, queue, lookups, group)
    elif queue[0] is queued:
        # Else the top is the one the record holds already (each top change is passed on).
        queue_refs.top_changed(state, key, queue)
    state.queue_sizes[key] += 1
    state.queued += 1
    conv.queue_key = key
    if state.for_reading:
        return
    state.pending.queues.add(key)
    plan = state.step_plan
    step = plan.next_step(key, sig) if plan is not None else conv.step
    timers = state.step_timers.setdefault(step, [])
    heapq.heappush(timers, entry)
    if len(timers) > 2 * state.queued + 64:
        heaps.compact(timers, lambda e: conversation_valid(state, e), state.queued)
    else:
        _drop_stale_tops(state.conversations, timers)  # ``heaps.compact``'s prune, without a closure


def leave_queue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """The conversation stops waiting (or is about to be filed again): its entries go stale."""
    conv.enqueued += 1
    key = conv.queue_key
    conv.queue_key = ""
    if key:
        state.queued -= 1
        size = state.queue_sizes.get(key, 0) - 1
        if size > 0:
            state.queue_sizes[key] = size
            queue = state.queues[key]
            if len(queue) > 2 * size + 64:
                heaps.compact(queue, lambda e: conversation_valid(state, e), size)
            else:
                _drop_stale_tops(state.conversations, queue)  # ``heaps.compact``'s prune, without a closure
            queue_refs.top_changed(state, key, queue)
        else:
            _drop_queue(state, key)
    elif conv.preferred_agent is not None:
        held = state.held.get(conv.preferred_agent)
        if held is not None:
            heaps.prune(held, lambda e: conversation_valid(state, e))
            if not held:
                del state.held[conv.preferred_agent]


def _drop_queue(state: RouterState, key: str) -> None:
    sig = state.queue_signatures.pop(key)
    state.queues.pop(key, None)
    state.queue_sizes.pop(key, None)
    state.pending.queues.discard(key)
    group = queue_group(sig)
    lookups = _queue_lookups(sig)
    queue_refs.queue_dropped(state, key, lookups, group)
    for lookup in lookups:
        groups = state.queue_lookup.get(lookup)
        found = groups.get(group) if groups is not None else None
        if groups is not None and found is not None:
            found.discard(key)
            if not found:
                del groups[group]
                if not groups:
                    del state.queue_lookup[lookup]


def requeue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """A waiting conversation's signature may have changed: file it again (it keeps its waiting time)."""
    leave_queue(state, conversation_id, conv)
    enter_queue(state, conversation_id, conv)


def touched(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """Something happened on a waiting conversation's subject: decide looks at it again
    (a decision of ours on it may have lost the race to this event)."""
    if conv.status != "waiting":
        return
    if conv.queue_key:
        state.pending.queues.add(conv.queue_key)
    else:
        state.pending.held.add(conversation_id)


def offer_made(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    if conv.offer_expires_at is not None and not state.for_reading:
        heapq.heappush(state.offer_timers, (conv.offer_expires_at.timestamp(), conversation_id, conv.enqueued))


def tidy_timers(state: RouterState) -> None:
    """Pop timers that no longer apply off the tops, so decide's scans start at live ones.

    Runs after every event that can make a timer stale: ``heaps.prune`` with ``offer_valid``
    and ``conversation_valid`` written out, so no closure is made per heap and event."""
    conversations = state.conversations
    offers = state.offer_timers
    while offers:
        top = offers[0]
        conv = conversations.get(top[1])
        if conv is not None and conv.enqueued == top[2] and conv.status == "offered":
            break
        heapq.heappop(offers)
    _drop_stale_tops(conversations, state.held_timers)
    step_timers = state.step_timers
    emptied: list[int] | None = None
    for step, timers in step_timers.items():
        if not _drop_stale_tops(conversations, timers):
            if emptied is None:
                emptied = []
            emptied.append(step)
    if emptied is not None:
        for step in emptied:
            del step_timers[step]


def _drop_stale_tops(conversations: dict[str, ConversationView], timers: list[Entry]) -> bool:
    """``heaps.prune(timers, conversation_valid)``; whether any timer is left."""
    while timers:
        top = timers[0]
        conv = conversations.get(top[1])
        if conv is not None and conv.enqueued == top[2]:
            return True
        heapq.heappop(timers)
    return False
