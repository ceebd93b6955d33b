"""Queue heads laid out for the search a freed agent makes (``router.work_for_agent``).

That search looks at ~40 queue heads per freed slot at 10,000 agents x 100,000 waiting, and
its cost is memory fetches, not work: through ``queue_lookup`` (sets of keys) each head costs
the key's hash, two dict look-ups, the heap list, its top tuple and that tuple's time, most
of them cache misses in a state of that size (the same search on warm caches runs ~5x
faster). Here every queue has one small record (``QueueRef``) holding its top entry and
time, kept up by the fold (``index_queues``) whenever the top may change, and the records are
listed per lookup and group as the keys are: a head that cannot win costs the record and its
time. Decide caches on the record what it works out per policy and per roster (the queue's
``QueueHead`` fields, its tier ceiling).

A cache beside the state (``state.__dict__``, like ``state.pending``): not a fact, never
snapshotted. It is built from ``queue_lookup`` the first time decide asks, and rebuilt when
that dict is not the one it was built from (a loaded state, indexes filed again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.index_keys import MAX_LEVEL
from router.state import ANY, RELAXED, AgentView, Entry, RouterState

if TYPE_CHECKING:
    from router.matching import QueueHead

_NO_ENTRY: Entry = (0.0, "", -1)


class QueueRef:
    """One queue: its top entry (kept by the fold) and what decide cached for it."""

    # The fields the search reads for every head first, so that they share the object's first
    # cache lines (slots are laid out in this order).
    __slots__ = (  # noqa: RUF023
        "heads_for",
        "since",
        "quick",
        "base",
        "sla",
        "escalated",
        "min_tier",
        "top",
        "key",
        "head",
        "ceiling_for",
        "ceiling",
    )

    def __init__(self, key: str, top: Entry) -> None:
        self.key = key
        self.top = top  # the heap's top entry (live: ``index_queues.leave_queue`` prunes)
        self.since = top[0]
        # The QueueHead under one policy and copies of its fields the search reads for every
        # head (``heads_for``: the ``Round.heads`` cache they came from; None: not yet).
        self.heads_for: object = None
        self.head: QueueHead | None = None
        self.base = 0
        self.sla = 0.0
        self.quick = False  # ordered by waiting time (no explicit SLA): rankable from its top
        self.escalated = False
        self.min_tier = 0
        # The tier ceiling for the roster it was worked out for (``Round.ceilings``).
        self.ceiling_for: object = None
        self.ceiling = 0


class Listed(list[QueueRef]):
    """The records of one lookup and group, with the highest tier ceiling among them as decide
    last worked it out (``max_ceiling`` for the ``Round.ceilings`` in ``ceilings_for``): an agent
    above it may take none of them, so a specialist's search passes the group by without
    reading its records (most queues' ceiling is the frontline tier). Adding a record forgets
    it; removing one leaves it an upper bound, which is all the search needs."""

    __slots__ = ("ceilings_for", "max_ceiling")

    def __init__(self) -> None:
        super().__init__()
        self.ceilings_for: object = None
        self.max_ceiling = 0


# channel -> skill -> language -> other skill ('' for none) -> primary minimum -> records:
# ``queue_lookup`` with its keys and groups (``index_keys.queue_group``) taken apart, so that an
# agent's search finds its skills, languages and levels without building a string.
Tree = dict[str, dict[str, dict[str, dict[str, dict[int, Listed]]]]]


def _parts(lookup: str, group: str) -> tuple[str, str, str, str, int]:
    """(channel, skill, language) of a lookup key (``index_keys.lookup_key``), (other skill,
    minimum) of a group."""
    channel, rest = lookup.split("|", 1)
    skill, language = rest.rsplit("|", 1)
    other, floor = group.rsplit("|", 1)
    return channel, skill, language, other, int(floor)


class QueueRefs:
    """Every queue's record by key, and the records per lookup and group (as ``queue_lookup``)."""

    __slots__ = ("by_key", "lookup", "tree")

    def __init__(self, state: RouterState) -> None:
        self.lookup = state.queue_lookup  # the dict this mirrors
        self.by_key: dict[str, QueueRef] = {
            key: QueueRef(key, heap[0] if heap else _NO_ENTRY) for key, heap in state.queues.items()
        }
        self.tree: Tree = {}
        for lookup, groups in state.queue_lookup.items():
            for group, keys in groups.items():
                self.listed(lookup, group).extend(self.by_key[key] for key in sorted(keys))

    def listed(self, lookup: str, group: str) -> Listed:
        channel, skill, language, other, floor = _parts(lookup, group)
        by_skill = self.tree.setdefault(channel, {})
        by_other = by_skill.setdefault(skill, {}).setdefault(language, {}).setdefault(other, {})
        found = by_other.get(floor)
        if found is None:
            found = by_other[floor] = Listed()
        return found


def agent_groups(refs: QueueRefs, agent: AgentView, channel: str) -> list[Listed]:
    """The records of the queues filed where ``index_keys.agent_lookups`` sends the agent: under
    each skill it has (and '*') in each language it speaks, '*' and '~' (escalated), in the
    groups of another skill it has (or none) and a minimum it meets. A list, not a generator:
    every freed slot's search walks all of them (~13 at 10,000 agents x 100,000 waiting)."""
    found: list[Listed] = []
    by_skill = refs.tree.get(channel)
    if not by_skill:
        return found
    profile = agent.profile
    languages = (*profile.languages, ANY, RELAXED)
    names = [name for name, level in profile.skills.items() if level > 0]
    for skill, level in profile.skills.items():
        if level <= 0:
            continue
        by_language = by_skill.get(skill)
        if not by_language:
            continue
        if level > MAX_LEVEL:
            level = MAX_LEVEL
        others = ["", *(name for name in names if name != skill)]
        for language in languages:
            by_other = by_language.get(language)
            if by_other:
                for other in others:
                    by_floor = by_other.get(other)
                    if by_floor:
                        for floor, listed in by_floor.items():
                            if floor <= level:
                                found.append(listed)
    # Queues needing no skill are filed in the group ('', 0) only (``queue_group``).
    by_language = by_skill.get(ANY)
    if by_language:
        for language in languages:
            by_other = by_language.get(language)
            if by_other:
                by_floor = by_other.get("")
                if by_floor:
                    for floor, listed in by_floor.items():
                        if floor <= 0:
                            found.append(listed)
    return found


def queue_refs(state: RouterState) -> QueueRefs:
    """The records of ``state``'s queues, built on first use (see the module's docstring)."""
    refs: QueueRefs | None = state.__dict__.get("_queue_refs")
    if refs is None or refs.lookup is not state.queue_lookup:
        refs = state.__dict__["_queue_refs"] = QueueRefs(state)
    return refs


def _kept(state: RouterState) -> QueueRefs | None:
    """The records, if decide has asked for them (else nothing to keep up)."""
    refs: QueueRefs | None = state.__dict__.get("_queue_refs")
    if refs is None or refs.lookup is not state.queue_lookup:
        return None
    return refs


def top_changed(state: RouterState, key: str, heap: list[Entry]) -> None:
    """The fold: the top of queue ``key`` may have changed (an entry pushed, stale ones dropped)."""
    refs = _kept(state)
    if refs is None:
        return
    ref = refs.by_key.get(key)
    if ref is not None and heap:
        top = ref.top = heap[0]
        ref.since = top[0]


def queue_filed(state: RouterState, key: str, heap: list[Entry], lookups: list[str], group: str) -> None:
    """The fold: a new queue was filed under ``lookups`` in ``group``."""
    refs = _kept(state)
    if refs is None:
        return
    ref = refs.by_key[key] = QueueRef(key, heap[0] if heap else _NO_ENTRY)
    for lookup in lookups:
        listed = refs.listed(lookup, group)
        listed.append(ref)
        listed.ceilings_for = None  # its ceiling is not yet among the group's


def queue_dropped(state: RouterState, key: str, lookups: list[str], group: str) -> None:
    """The fold: queue ``key`` is empty and left ``queue_lookup``."""
    refs = _kept(state)
    if refs is None:
        return
    ref = refs.by_key.pop(key, None)
    if ref is None:
        return
    for lookup in lookups:
        channel, skill, language, other, floor = _parts(lookup, group)
        by_skill = refs.tree.get(channel, {})
        by_language = by_skill.get(skill, {})
        by_other = by_language.get(language, {})
        by_floor = by_other.get(other, {})
        listed = by_floor.get(floor)
        if listed is None:
            continue
        listed.remove(ref)
        # Empty branches go, as in ``queue_lookup``: a search never walks dead ones.
        if not listed:
            del by_floor[floor]
            if not by_floor:
                del by_other[other]
                if not by_other:
                    del by_language[language]
                    if not by_language:
                        del by_skill[skill]
                        if not by_skill:
                            del refs.tree[channel]
