"""Routing state: what the router knows, folded from the log (see ``router.fold``).

Everything here is plain msgspec data so a snapshot is one encode (``router.snapshot``).
The state holds facts only; anything that depends on the policy (priority boosts, tier
rules, escalation waits) is computed at decide time, because ``evolve`` is not given a
policy and the same log must fold to the same state under any configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, cast

import msgspec

from events.model import AgentProfile, DecisionReason, Requirements

if TYPE_CHECKING:
    from router.step_plan import StepPlan

AGENT_STATUSES = ("available", "away", "offline")
# A resolved conversation leaves ``RouterState.conversations`` (see router.fold), so
# 'resolved' is only ever seen on the view the fold is about to drop.
CONVERSATION_STATUSES = ("new", "waiting", "offered", "assigned", "resolved")

# The views below are untracked by the garbage collector (``gc=False``): they hold strings,
# numbers, times, events' structs and containers of those, never a view or the state, so they
# can be in no reference cycle and reference counting frees them. Tracked, every conversation
# and customer the router opened counted towards the next young collection (the state only
# grows between resolutions), and each view carried the collector's header.
# ``tests/unit/router/test_untracked.py`` holds them to it.


class AgentView(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    profile: AgentProfile = msgspec.field(default_factory=AgentProfile)
    # 'available' | 'away' | 'offline'; an agent known only by its profile is offline.
    status: str = "offline"
    # Per channel: assigned conversations plus pending offers (an offer holds capacity).
    load: dict[str, int] = {}
    # Conversations this agent holds (assigned or offered), by id.
    holding: set[str] = set()
    # When this agent last received work (offer or assignment); None: never. Longest idle wins ties.
    last_work_at: datetime | None = None
    # Offers that expired in a row without an answer; reset by accept, decline or coming back.
    expired_in_a_row: int = 0
    # Bumped on every change that can alter the agent's place in the free-agent index.
    version: int = 0
    # False from AgentDeactivated until AgentReactivated. A deactivated agent is offline (the
    # fold keeps her so and ignores status changes meanwhile): never indexed, offered or assigned.
    active: bool = True
    # Per channel: when she resolved her latest conversations there (the newest ``capacity``
    # of them, see ``router.wrap_up``). Each keeps a slot taken until resolved_at +
    # ``RouterPolicy.wrap_up_seconds[channel]``: a fact here, a duration in the policy.
    wrap_up: dict[str, list[datetime]] = {}
    # The time of the newest status, profile or (de)activation fact folded for her: one
    # written well before it is a re-published old fact (``router.replays.stale``).
    changed_at: datetime | None = None

    def total_load(self) -> int:
        return sum(self.load.values())

    def free_on(self, channel: str) -> int:
        """Slots left on ``channel``, counting the overall cap."""
        free = self.profile.capacity.get(channel, 0) - self.load.get(channel, 0)
        if self.profile.max_total is not None:
            free = min(free, self.profile.max_total - self.total_load())
        return max(free, 0)

    def has_room(self, channel: str) -> bool:
        """``free_on(channel) > 0`` without the count: every free-agent entry a search or the
        fold looks at asks, so the sum of the load is made only when there is a cap."""
        load = self.load
        profile = self.profile
        if profile.capacity.get(channel, 0) - load.get(channel, 0) <= 0:
            return False
        cap = profile.max_total
        return cap is None or cap - sum(load.values()) > 0

    def free_channels(self) -> list[str]:
        """The channels ``free_on`` gives room on (the fold asks before and after every load change)."""
        load = self.load
        cap = self.profile.max_total
        if cap is not None and cap - sum(load.values()) <= 0:
            return []
        return [channel for channel, slots in self.profile.capacity.items() if slots - load.get(channel, 0) > 0]

    def occupancy(self) -> float:
        """Share of total capacity in use (0.0 idle .. 1.0 full)."""
        total = sum(self.profile.capacity.values())
        if self.profile.max_total is not None:
            total = min(total, self.profile.max_total)
        return sum(self.load.values()) / total if total > 0 else 1.0


class ConversationView(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    customer_id: str
    channel: str = "chat"
    # 'new' (opened, no routing request yet) | 'waiting' | 'offered' | 'assigned'
    status: str = "new"
    agent_id: str | None = None  # the agent holding it (assigned) or offered it
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    # Stream sequence of the last event on rd.evt.c.<customer>.<conversation>: the expected
    # last subject sequence for the router's next append there.
    subject_seq: int = 0
    reason: DecisionReason | None = None
    transfer_count: int = 0
    public: bool = False
    opened_at: datetime | None = None
    waiting_since: datetime | None = None  # first routing request of this episode; kept across re-routes
    offer_expires_at: datetime | None = None
    # Escalation: the highest policy step reached (0: none) and whether the case-owner
    # preference has been dropped.
    step: int = 0
    preference_dropped: bool = False
    # Agents this conversation must not go to again (declined, let the offer expire, transferred
    # away, named in the requirements).
    excluded: list[str] = []
    # The members of ``excluded`` that are there only because they declined or let the offer
    # expire: a ``forgive_declines`` step lifts these (and only these).
    declined: list[str] = []
    # The agent this conversation should go back to: the case owner or a transfer target.
    preferred_agent: str | None = None
    preferred_is_transfer: bool = False  # a transfer target skips skill checks (an operator chose)
    escalated_tier: int = 0  # minimum agent tier set by ConversationEscalated / transfer to a tier / 3rd transfer
    # Where it waits: a key of RouterState.queues (or of RouterState.held while held for its
    # preferred agent); "" when not waiting. ``enqueued`` numbers its entries into queues and
    # timers so an entry left behind by an earlier wait is recognised as stale.
    queue_key: str = ""
    enqueued: int = 0
    # The 8-byte digests of the events folded into this view (``router.replays``): one
    # re-published later is folded once. Dropped with the view at resolution.
    folded: bytes = b""

    def is_held(self) -> bool:
        """Waiting for its preferred agent (case owner or transfer target) rather than anyone."""
        return self.preferred_agent is not None and not self.preference_dropped


class CustomerView(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    tier: str = "standard"
    flags: tuple[str, ...] = ()
    preferred_language: str | None = None
    # The agent who last held one of this customer's conversations (the case owner), and when
    # that conversation was resolved (None while it is still open).
    last_agent: str | None = None
    last_agent_resolved_at: datetime | None = None
    open_conversations: set[str] = set()
    # Set when this customer was merged into another (``CustomersMerged``): the survivor's
    # view then stands for this one (see ``RouterState.customer``).
    merged_into: str | None = None
    # The 8-byte digests of this customer's conversation ids that were resolved (``router.replays``):
    # one is never opened or routed again, so an opening re-published later is ignored.
    closed: bytes = b""
    # The time of the newest profile fact folded for this customer (``router.replays.stale``).
    changed_at: datetime | None = None


class QueueSignature(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The facts that decide who may take a waiting conversation; equal signatures share a queue.

    Only facts, no policy: decide turns a signature into effective requirements.
    """

    channel: str
    skills: tuple[tuple[str, int], ...] = ()
    language: str | None = None
    fallback_languages: tuple[str, ...] = ()
    min_tier: int = 1  # from the requirements and escalations
    transfers: int = 0
    customer_tier: str = "standard"
    flags: tuple[str, ...] = ()
    public: bool = False
    priority: int = 0
    step: int = 0  # escalation steps reached
    # With its own SLA due time (from the requirements) a conversation waits in a queue ordered
    # by that time; otherwise by waiting time, which in one queue (one channel) is the same order.
    explicit_sla: bool = False

    def primary_skill(self) -> tuple[str, int]:
        """The skill agents are looked up by: the highest minimum (ties: name); '*' for none."""
        if not self.skills:
            return ANY, 0
        return max(self.skills, key=lambda item: (item[1], item[0]))


ANY = "*"  # stands for "any skill" / "any language" in index keys
RELAXED = "~"  # queue lookup key for conversations at an escalation step (may accept more languages)

# Heap entries. Conversations: (waiting since or SLA due (epoch s), conversation id, enqueued number).
Entry = tuple[float, str, int]
# Free agents: (minus the agent's level in the heap's language (0 under '*'), occupancy,
# last work (epoch s, 0: never), agent id, agent version).
AgentEntry = tuple[int, float, float, str, int]


@dataclass
class PendingWork:
    """What decide still has to look at: marks set by the fold, cleared by decide once it
    examined an item and found nothing to do. A cache, not a fact: it is neither compared
    nor snapshotted, and a state without one (fresh or loaded) starts with a full scan."""

    full: bool = True
    agents: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    releases: set[str] = field(default_factory=set)  # members of RouterState.release_pending to judge
    # Wrap-ups to wait out, per channel: heaps of (resolved at (epoch s), agent id). decide pops
    # the ones that ended and looks at their agents again (``router.timers.end_wrap_ups``);
    # a full look rebuilds them from ``AgentView.wrap_up``.
    wrap_ups: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    # Agents whose run of expired offers grew (members of RouterState.streaking_agents), to set
    # away once it reaches the policy's limit; ``away_limit`` is the limit they were last
    # judged against (another limit: every streak is judged again).
    streaks: set[str] = field(default_factory=set)
    away_limit: int = -1


def reading_only(state: RouterState) -> RouterState:
    """Keep only what a read model serves: the facts (agents, conversations, customers), the
    queues with their signatures and sizes and the held heaps (``router.queues``'s summaries).
    The agent side of the indexes (free agents, who is on shift), the timers and decide's
    marks are decide's alone and are no longer kept up, so an agent's change costs no
    re-filing under its skills x languages. A flag beside the facts, like ``pending``: it is
    not snapshotted, so a loaded state is a full one until marked again."""
    state.__dict__["_for_reading"] = True
    return state


class RouterState(msgspec.Struct, kw_only=True, dict=True):
    last_seq: int = 0  # last stream sequence folded
    agents: dict[str, AgentView] = {}
    conversations: dict[str, ConversationView] = {}  # open ones: resolved conversations are dropped
    customers: dict[str, CustomerView] = {}

    # --- indexes (maintained by router.index; derived, but snapshotted with the facts) ---
    # Waiting conversations by queue signature key: heaps ordered by waiting time.
    queues: dict[str, list[Entry]] = {}
    queue_signatures: dict[str, QueueSignature] = {}
    queue_sizes: dict[str, int] = {}  # live members per queue (the heaps hold stale entries too)
    queued: int = 0  # live members of all queues
    # "channel|skill|language" (language '*' none, '~' escalated) -> group ("<another required
    # skill>|<minimum level>", see index_keys.queue_group) -> queue keys, for agents looking for work.
    queue_lookup: dict[str, dict[str, set[str]]] = {}
    # Conversations held for their preferred agent, by that agent.
    held: dict[str, list[Entry]] = {}
    # Timers, as heaps: holds (by waiting since), escalation steps (by steps reached), offers (by expiry).
    held_timers: list[Entry] = []
    step_timers: dict[int, list[Entry]] = {}
    offer_timers: list[Entry] = []
    # Available agents with a free slot, by "channel|skill|language|tier|level".
    free_agents: dict[str, list[AgentEntry]] = {}
    free_live: dict[str, int] = {}
    # Available agents with any capacity on the channel (busy or not), same keys: who is on shift.
    capable: dict[str, int] = {}
    max_agent_tier: int = 1
    # Conversations held by an agent who went offline, to hand back.
    release_pending: set[str] = set()
    # Agents whose last offer outcomes were expiries.
    streaking_agents: set[str] = set()
    # Event types a newer writer put on the log that this fold skipped, with the first
    # sequence of each: a version that knows them must not resume from this state.
    skipped_types: dict[str, int] = {}

    @property
    def for_reading(self) -> bool:
        """Folded for a read model (the API's view), never decided on: see ``reading_only``."""
        return bool(self.__dict__.get("_for_reading", False))

    @property
    def pending(self) -> PendingWork:
        found = self.__dict__  # ``for_reading`` read here directly: the fold asks on every event
        if found.get("_for_reading", False):
            return PendingWork()  # decide never runs here: its marks would only pile up
        work = found.get("_pending")
        if work is None:
            work = PendingWork()
            found["_pending"] = work
        return cast(PendingWork, work)

    @property
    def step_plan(self) -> StepPlan | None:
        """Decide's plan of which escalation step each queue waits for next
        (``router.step_plan``): set by decide, not snapshotted; None until decide runs."""
        return cast("StepPlan | None", self.__dict__.get("_step_plan"))

    @step_plan.setter
    def step_plan(self, plan: StepPlan | None) -> None:
        self.__dict__["_step_plan"] = plan

    def customer(self, customer_id: str) -> CustomerView | None:
        """The view that stands for ``customer_id``: its own, or after a merge the survivor's
        (following merges of merges). Conversations keep their own customer id (it names their
        subject); tier, flags and the case owner are read through here (on the router's hot
        path: no list made, unlike ``merge_chain``)."""
        found = self.customers.get(customer_id)
        for _ in range(64):  # merges never form a cycle (the fold refuses one); bounded anyway
            if found is None or found.merged_into is None:
                return found
            found = self.customers.get(found.merged_into)
        return found

    def merge_chain(self, customer_id: str) -> list[str]:
        """``customer_id``, then each customer it was merged into, the survivor last."""
        chain = [customer_id]
        current = self.customers.get(customer_id)
        for _ in range(64):  # merges never form a cycle (the fold refuses one); bounded anyway
            if current is None or current.merged_into is None or current.merged_into in chain:
                break
            chain.append(current.merged_into)
            current = self.customers.get(current.merged_into)
        return chain

    def agent_load(self, agent_id: str) -> dict[str, int]:
        agent = self.agents.get(agent_id)
        return dict(agent.load) if agent else {}
