"""The manager's numbers: the service report against a naive recomputation from the events.

The oracle below reads a generated event list with plain loops, one conversation at a time,
following the definitions of services/reports/README.md, with none of the fold's code. The
histories are as the router and intake write them (a customer has one open conversation per
channel), with what makes a supervisor's figures go wrong: conversations across the window's
ends and across midnight and daylight-saving changes (Europe/Berlin's last Sunday of October,
America/New_York's first Sunday of November), transfers and escalations, offers declined and
timed out, customers coming back (reopens), merged and erased customers, conversations resolved
with no reply, decisions the router never acted on (after the resolution), and customers whose
tier changes between and during their conversations."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import subjects
from events.model import (
    AgentOffered,
    Channel,
    ConversationAssigned,
    ConversationEscalated,
    ConversationEvent,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerErased,
    CustomerProfileUpdated,
    CustomersMerged,
    DecisionReason,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.reports import fold_all, parse_query, service_report
from services.reports.projection import dump_snapshot, load_snapshot

REASON = DecisionReason(rule="best_fit")
SLA = {"chat": 60.0, "sms": 300.0, "email": 14_400.0}
AGENTS = ("ava", "bruno", "chen")
CUSTOMERS = ("k1", "k2", "k3")
TIERS = ("standard", "gold", "platinum")
# Instants where days and hours are easy to get wrong.
EDGES = (
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Berlin: 03:00 CEST becomes 02:00 CET
    datetime(2026, 10, 25, 22, 0, tzinfo=UTC),  # Berlin: midnight after the change (23 h day)
    datetime(2026, 10, 24, 22, 0, tzinfo=UTC),  # Berlin: midnight before it (CEST)
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York: 02:00 EDT becomes 01:00 EST
    datetime(2026, 11, 1, 4, 0, tzinfo=UTC),  # New York: midnight of the 25-hour day
    datetime(2026, 10, 26, 0, 0, tzinfo=UTC),  # UTC midnight
)
ZONES = ("UTC", "Europe/Berlin", "America/New_York")
NOW = datetime(2026, 11, 4, 0, 0, tzinfo=UTC)
STILL_OPEN = datetime(2100, 1, 1, tzinfo=UTC)


# --- histories ---------------------------------------------------------------------------


@dataclass
class Script:
    """One conversation's events, written as time passes."""

    customer: str
    cid: str
    channel: Channel
    t: datetime
    events: list[ConversationEvent] = field(default_factory=list)

    def emit(self, kind: type[ConversationEvent], **fields: Any) -> None:
        self.events.append(kind(at=self.t, customer_id=self.customer, conversation_id=self.cid, **fields))


OFFSETS = st.sampled_from((1, 59, 60, 61, 299, 301, 3599, 3600, 7200, 14_401, 86_400))


@st.composite
def conversation(draw: st.DrawFn, n: int, customer: str, channel: Channel, start: datetime) -> Script:
    s = Script(customer, f"conv{n}", channel, start)
    outbound = draw(st.booleans()) and draw(st.booleans())
    if outbound:
        # As POST /v1/conversations writes it: opened assigned to her, then her message.
        s.emit(ConversationOpened, channel=channel, contact="x", initiated_by="agent:ava")
        s.emit(ConversationAssigned, agent_id="ava", channel=channel, reason=REASON)
        s.emit(ReplyRequested, channel=channel, reply_id=f"r{n}-0", agent_id="ava", text="hello")
        if draw(st.booleans()):
            s.t += timedelta(seconds=draw(OFFSETS))
            s.emit(MessageReceived, channel=channel, message_id=f"m{n}", provider_message_id=f"p{n}", text="hi")
    else:
        s.emit(ConversationOpened, channel=channel, contact="x")
        s.emit(MessageReceived, channel=channel, message_id=f"m{n}", provider_message_id=f"p{n}", text="hi")
        due = s.t + timedelta(seconds=draw(OFFSETS)) if draw(st.integers(0, 4)) == 0 else None
        skills = draw(st.sampled_from(({}, {"billing": 1}, {"billing": 1, "technical": 2})))
        s.emit(RoutingRequested, channel=channel, requirements=Requirements(skills=skills, sla_due=due))
    holder: str | None = "ava" if outbound else None
    steps = draw(st.lists(st.sampled_from(STEPS), max_size=8))
    for k, step in enumerate(steps, 1):
        s.t += timedelta(seconds=draw(OFFSETS))
        agent = draw(st.sampled_from(AGENTS))
        match step:
            case "offer":
                s.emit(AgentOffered, agent_id=agent, expires_at=s.t + timedelta(seconds=30), reason=REASON)
                s.t += timedelta(seconds=draw(OFFSETS))
                answer = draw(st.sampled_from(("accept", "decline", "expire", "accept_other", "none")))
                if answer == "accept":
                    s.emit(OfferAccepted, agent_id=agent)
                    holder = agent
                elif answer == "decline":
                    s.emit(OfferDeclined, agent_id=agent)
                elif answer == "expire":
                    s.emit(OfferExpired, agent_id=agent)
                elif answer == "accept_other":  # a stale accept: the router ignores it
                    s.emit(OfferAccepted, agent_id=next(a for a in AGENTS if a != agent))
            case "assign":
                s.emit(ConversationAssigned, agent_id=agent, channel=channel, reason=REASON)
                holder = agent
            case "reply" if holder is not None:
                s.emit(ReplyRequested, channel=channel, reply_id=f"r{n}-{k}", agent_id=holder, text="ok")
                if draw(st.booleans()):
                    s.t += timedelta(seconds=2)
                    s.emit(MessageSent, channel=channel, reply_id=f"r{n}-{k}")
            case "message":
                s.emit(MessageReceived, channel=channel, message_id=f"m{n}-{k}", provider_message_id=f"p{n}-{k}")
            case "transfer" if holder is not None:
                s.emit(ConversationTransferred, from_agent=holder, to_agent=agent)
                s.t += timedelta(seconds=draw(OFFSETS))
                s.emit(ConversationAssigned, agent_id=agent, channel=channel, reason=REASON)
                holder = agent
            case "escalate":
                s.emit(ConversationEscalated, from_agent=holder, to_tier=2)
                holder = None
            case "release" if holder is not None:
                s.emit(ConversationReleased, agent_id=holder, declined=draw(st.booleans()))
                holder = None
    end = draw(st.sampled_from(("resolve", "resolve", "resolve", "resolve_nobody", "open")))
    if end != "open":
        s.t += timedelta(seconds=draw(OFFSETS))
        s.emit(ConversationResolved, agent_id=holder if end == "resolve" else None)
        if draw(st.integers(0, 5)) == 0:  # a decision the router never acted on: credits nobody
            s.t += timedelta(seconds=1)
            s.emit(ConversationAssigned, agent_id="bruno", channel=channel, reason=REASON)
    return s


STEPS = ("offer", "assign", "reply", "message", "transfer", "escalate", "release")


@st.composite
def histories(draw: st.DrawFn) -> list[LogEvent]:
    """Conversations in time order, merges and erasures between them; the log is in time order."""
    timed: list[tuple[datetime, int, Any]] = []  # LogEvent, of which ConversationEvent is no member
    free_at: dict[tuple[str, str], datetime] = {}  # a customer's one open conversation per channel
    family = {c: c for c in CUSTOMERS}
    erased: set[str] = set()
    for n in range(draw(st.integers(1, 9))):
        customer = draw(st.sampled_from(CUSTOMERS))
        channel: Channel = draw(st.sampled_from(("sms", "chat", "email")))
        edge = draw(st.sampled_from(EDGES))
        start = edge + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)) // 60 * 60)
        start = max(start, free_at.get((family[customer], channel), start))
        if customer in erased or start >= STILL_OPEN:
            continue
        script = draw(conversation(n, customer, channel, start))
        resolved = any(isinstance(e, ConversationResolved) for e in script.events)
        free_at[(family[customer], channel)] = script.t + timedelta(seconds=1) if resolved else STILL_OPEN
        timed += [(e.at, len(timed) + i, e) for i, e in enumerate(script.events)]
        if draw(st.integers(0, 2)) == 0:  # the profile's tier changes, perhaps mid-conversation
            at = start + timedelta(seconds=draw(st.sampled_from((-1, 0, 1, 60))))
            tier = draw(st.sampled_from(TIERS))
            timed.append((at, len(timed), CustomerProfileUpdated(at=at, customer_id=customer, tier=tier)))
        what = draw(st.sampled_from(("nothing", "nothing", "nothing", "merge", "erase")))
        later = script.t + timedelta(seconds=draw(OFFSETS))
        if what == "merge":
            survivor, merged = draw(st.permutations(CUSTOMERS))[:2]
            if family[survivor] != family[merged] and not {survivor, merged} & erased:
                timed.append((later, len(timed), CustomersMerged(at=later, customer_id=survivor, merged_id=merged)))
                for c, f in family.items():
                    if f == family[merged]:
                        family[c] = family[survivor]
                for (f, ch), t in list(free_at.items()):  # the family's open conversations stay open
                    if f == merged:
                        free_at[(survivor, ch)] = max(t, free_at.get((survivor, ch), t))
        elif what == "erase" and resolved:
            timed.append((later, len(timed), CustomerErased(at=later, customer_id=customer, reason="asked")))
            erased.add(customer)
    # Erasure closes what the customer still had open (services.customers.erase).
    out = [e for _, _, e in sorted(timed, key=lambda x: (x[0], x[1]))]
    return _close_erased(out)


def _close_erased(events: list[LogEvent]) -> list[LogEvent]:
    """An erasure resolves what the customer still had open (``erased``), and nothing of theirs
    is written after it (services.customers.erase)."""
    result: list[LogEvent] = []
    open_of: dict[str, list[str]] = {}
    gone: set[str] = set()
    for e in events:
        if isinstance(e, CustomerErased):
            for cid in open_of.pop(e.customer_id, []):
                result.append(
                    ConversationResolved(at=e.at, customer_id=e.customer_id, conversation_id=cid, erased=True)
                )
            gone.add(e.customer_id)
        elif isinstance(e, ConversationEvent) and e.customer_id in gone:
            continue
        elif isinstance(e, ConversationOpened):
            open_of.setdefault(e.customer_id, []).append(e.conversation_id)
        elif isinstance(e, ConversationResolved) and e.conversation_id in open_of.get(e.customer_id, []):
            open_of[e.customer_id].remove(e.conversation_id)
        result.append(e)
    return result


# --- the oracle ---------------------------------------------------------------------------


@dataclass
class Figures:
    cid: str
    customer: str
    channel: str
    queue: str
    day_at: datetime
    hour_at: datetime
    agent: str
    outbound: bool
    first_response: float | None = None
    time_to_assign: float | None = None
    handle: float | None = None
    resolved: bool = False
    abandoned: bool = False
    erased: bool = False
    resolved_at: datetime | None = None
    transfers: int = 0
    escalations: int = 0
    sla: str | None = None
    reopened: bool = False
    is_reopen: bool = False
    tier: str = "standard"

    @property
    def fcr(self) -> bool:
        return self.resolved and not self.transfers and not self.escalations and not self.reopened


@dataclass
class Offer:
    agent: str
    at: datetime
    outcome: str = "pending"


SETTLES = (
    AgentOffered,
    ConversationAssigned,
    ConversationTransferred,
    ConversationEscalated,
    ConversationReleased,
    ConversationResolved,
    OfferAccepted,
)


def oracle(events: list[LogEvent], reopen_hours: float) -> tuple[list[Figures], list[tuple[Offer, Figures]]]:
    convs: list[Figures] = []
    offers: list[tuple[Offer, Figures]] = []
    ids = [e.conversation_id for e in events if isinstance(e, ConversationOpened)]
    for cid in dict.fromkeys(ids):
        mine = [e for e in events if isinstance(e, ConversationEvent) and e.conversation_id == cid]
        opened = next(e for e in mine if isinstance(e, ConversationOpened))
        routed = next((e for e in mine if isinstance(e, RoutingRequested)), None)
        first_msg = next((e.at for e in mine if isinstance(e, MessageReceived)), None)
        resolution = next((e for e in mine if isinstance(e, ConversationResolved)), None)
        live = mine if resolution is None else mine[: mine.index(resolution) + 1]
        queue = "(not routed)"
        if routed is not None:
            queue = f"{routed.channel}:{'+'.join(sorted(routed.requirements.skills)) or 'any'}"
        f = Figures(
            cid,
            opened.customer_id,
            opened.channel,
            queue,
            opened.at,
            (routed or opened).at,
            "(unassigned)",
            bool(opened.initiated_by),
        )
        pending: Offer | None = None
        assigned_at: datetime | None = None
        for e in live:
            # Every decision settles the pending offer, but an accept of another agent's (stale).
            stale = isinstance(e, OfferAccepted) and pending is not None and e.agent_id != pending.agent
            if isinstance(e, SETTLES) and pending is not None and not stale:
                pending.outcome = "accepted" if isinstance(e, OfferAccepted) else "withdrawn"
                if isinstance(e, OfferAccepted) and assigned_at is None:
                    assigned_at, f.agent = e.at, e.agent_id
                pending = None
            if isinstance(e, AgentOffered):
                pending = Offer(e.agent_id, e.at)
                offers.append((pending, f))
            elif isinstance(e, (OfferDeclined, OfferExpired)) and pending is not None and pending.agent == e.agent_id:
                pending.outcome = "declined" if isinstance(e, OfferDeclined) else "expired"
                pending = None
            elif isinstance(e, ConversationAssigned) and assigned_at is None:
                assigned_at, f.agent = e.at, e.agent_id
            elif isinstance(e, ConversationTransferred):
                f.transfers += 1
            elif isinstance(e, ConversationEscalated):
                f.escalations += 1
        if first_msg is not None:
            after = mine[next(i for i, e in enumerate(mine) if isinstance(e, MessageReceived)) :]
            reply = next((e.at for e in after if isinstance(e, (ReplyRequested, MessageSent))), None)
            f.first_response = None if reply is None else (reply - first_msg).total_seconds()
        if assigned_at is not None and routed is not None:
            f.time_to_assign = (assigned_at - routed.at).total_seconds()
        if resolution is not None:
            f.resolved_at = resolution.at
            f.erased = resolution.erased
            f.resolved = not f.erased and (assigned_at is not None or f.outbound)
            f.abandoned = not f.erased and not f.resolved
            if not f.erased and assigned_at is not None:
                f.handle = (resolution.at - assigned_at).total_seconds()
        if routed is not None:
            due = routed.requirements.sla_due or routed.at + timedelta(seconds=SLA[routed.channel])
            if assigned_at is not None:
                f.sla = "met" if assigned_at <= due else "breached"
            elif (f.resolved_at or NOW) > due:
                f.sla = "breached"
        convs.append(f)
    _reopens(events, convs, reopen_hours)
    _tiers(events, convs)
    return convs, offers


def _tiers(events: list[LogEvent], convs: list[Figures]) -> None:
    """The customer's tier when the conversation was first routed (else opened); after a merge
    the survivor's profile stands, as in the router."""
    by_id = {f.cid: f for f in convs}
    tier: dict[str, str] = {}
    into: dict[str, str] = {}

    def root(c: str) -> str:
        while c in into:
            c = into[c]
        return c

    routed: set[str] = set()
    for e in events:
        if isinstance(e, CustomerProfileUpdated):
            tier[e.customer_id] = e.tier
        elif isinstance(e, CustomersMerged):
            if root(e.customer_id) != root(e.merged_id) and e.merged_id not in into:
                into[e.merged_id] = e.customer_id
        elif isinstance(e, (ConversationOpened, RoutingRequested)) and e.conversation_id not in routed:
            by_id[e.conversation_id].tier = tier.get(root(e.customer_id), "standard")
            if isinstance(e, RoutingRequested):
                routed.add(e.conversation_id)


def _reopens(events: list[LogEvent], convs: list[Figures], reopen_hours: float) -> None:
    """A resolution is reopened by the first conversation the same customer (counting merged
    customers as one from the merge on) opens on the same channel after it, within the window.
    A customer already merged is not merged again (the router keeps the first merge)."""
    by_id = {f.cid: f for f in convs}
    parent: dict[str, str] = {}

    def root(c: str) -> str:
        while c in parent:
            c = parent[c]
        return c

    waiting: list[Figures] = []  # resolved, no new conversation yet
    for e in events:
        if isinstance(e, CustomersMerged):
            # Merged back into its own family (already one customer), or merged before: no change.
            if e.merged_id not in parent and root(e.customer_id) != e.merged_id:
                parent[e.merged_id] = e.customer_id
        elif isinstance(e, ConversationResolved) and by_id[e.conversation_id].resolved_at == e.at:
            f = by_id[e.conversation_id]
            if f not in waiting:
                waiting.append(f)
        elif isinstance(e, ConversationOpened) and not e.initiated_by:
            same = [w for w in waiting if w.channel == e.channel and root(w.customer) == root(e.customer_id)]
            if not same:
                continue
            previous = max(same, key=lambda w: w.resolved_at or NOW)
            for w in same:
                waiting.remove(w)
            if e.at - (previous.resolved_at or NOW) <= timedelta(hours=reopen_hours):
                previous.reopened = True
                by_id[e.conversation_id].is_reopen = True


# --- comparison ---------------------------------------------------------------------------


def durations(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 3),
        "median": round(statistics.median(values), 3),
    }


def expected_bucket(convs: list[Figures], offers: list[Offer]) -> dict[str, Any]:
    def some(key: str) -> list[float]:
        return [v for f in convs if (v := getattr(f, key)) is not None]

    return {
        "conversations": len(convs),
        "assigned": sum(f.agent != "(unassigned)" for f in convs),
        "responded": len(some("first_response")),
        "resolved": sum(f.resolved for f in convs),
        "abandoned": sum(f.abandoned for f in convs),
        "erased": sum(f.erased for f in convs),
        "first_response_seconds": durations(some("first_response")),
        "time_to_assign_seconds": durations(some("time_to_assign")),
        "handle_seconds": durations(some("handle")),
        "transfers": sum(f.transfers for f in convs),
        "transferred_conversations": sum(f.transfers > 0 for f in convs),
        "escalations": sum(f.escalations for f in convs),
        "escalated_conversations": sum(f.escalations > 0 for f in convs),
        "reopened": sum(f.reopened for f in convs),
        "reopens": sum(f.is_reopen for f in convs),
        "first_contact_resolutions": sum(f.fcr for f in convs),
        "sla_met": sum(f.sla == "met" for f in convs),
        "sla_breached": sum(f.sla == "breached" for f in convs),
        "offers": len(offers),
        "offers_accepted": sum(o.outcome == "accepted" for o in offers),
        "offers_declined": sum(o.outcome == "declined" for o in offers),
        "offers_expired": sum(o.outcome == "expired" for o in offers),
    }


def shown(bucket: dict[str, Any]) -> dict[str, Any]:
    out = {k: bucket[k] for k in expected_bucket([], [])}
    for k in ("first_response_seconds", "time_to_assign_seconds", "handle_seconds"):
        out[k] = {s: bucket[k][s] for s in ("count", "mean", "median")}
    return out


def group_key(group_by: str, f: Figures, zone: ZoneInfo) -> str:
    return {
        "channel": f.channel,
        "agent": f.agent,
        "queue": f.queue,
        "tier": f.tier,
        "day": f.day_at.astimezone(zone).date().isoformat(),
        "conversation": f.cid,
    }[group_by]


def offer_group(group_by: str, o: Offer, f: Figures, zone: ZoneInfo) -> str:
    return {
        "channel": f.channel,
        "agent": o.agent,
        "queue": f.queue,
        "tier": f.tier,
        "day": o.at.astimezone(zone).date().isoformat(),
        "conversation": f.cid,
    }[group_by]


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i, subject=subjects.for_event(e), event=e) for i, e in enumerate(events, 1)]


WINDOWS = st.sampled_from(
    (
        ("2026-10-24", "2026-10-24"),
        ("2026-10-25", "2026-10-25"),  # Berlin's 25-hour day
        ("2026-10-25", "2026-10-26"),
        ("2026-11-01", "2026-11-01"),  # New York's 25-hour day
        ("2026-10-20", "2026-11-03"),
        ("2026-10-25T01:30:00", "2026-10-25T03:00:00"),  # times on the team's clock, across its change
        ("2026-10-31T23:00:00-04:00", "2026-11-01T01:30:00-05:00"),
        ("2016-11-01", "2026-11-03"),  # ten years
        ("2026-10-28", "2026-10-28"),  # a day with nothing
    )
)


@given(
    events=histories(),
    window=WINDOWS,
    tz=st.sampled_from(ZONES),
    group_by=st.sampled_from(("channel", "agent", "queue", "tier", "day", "conversation")),
    reopen_hours=st.sampled_from((0.0, 1.0, 24.0)),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_the_report_is_the_events_counted_by_hand(
    events: list[LogEvent], window: tuple[str, str], tz: str, group_by: str, reopen_hours: float
) -> None:
    query = parse_query(
        {"from": window[0], "to": window[1], "tz": tz, "group_by": group_by, "reopen_hours": str(reopen_hours)}, NOW
    )
    zone = ZoneInfo(tz)
    start, end = _bounds(window, zone)
    assert (query.start, query.end) == (start, end)
    state = fold_all(stored(events))
    body = service_report(state, query, now=NOW, sla_seconds=SLA)
    # A restarted API folds on from its snapshot: the same numbers.
    again = load_snapshot(dump_snapshot(state, state.last_seq))
    assert again is not None
    assert service_report(again.state, query, now=NOW, sla_seconds=SLA) == body

    convs, offers = oracle(events, reopen_hours)
    inside = [f for f in convs if start <= f.day_at < end]
    offered = [(o, f) for o, f in offers if start <= o.at < end]
    assert shown(body["total"]) == expected_bucket(inside, [o for o, _ in offered])
    groups: dict[str, tuple[list[Figures], list[Offer]]] = {}
    for f in inside:
        groups.setdefault(group_key(group_by, f, zone), ([], []))[0].append(f)
    for o, f in offered:
        groups.setdefault(offer_group(group_by, o, f, zone), ([], []))[1].append(o)
    assert {g["key"]: shown(g) for g in body["groups"]} == {
        key: expected_bucket(*groups[key]) for key in sorted(groups)
    }
    hours = [0] * 24
    for f in inside:
        hours[f.hour_at.astimezone(zone).hour] += 1
    assert [h["conversations"] for h in body["by_hour"]] == hours


def _bounds(window: tuple[str, str], zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The window as a person reads it: a date is that whole day, from its midnight to the next,
    in the report's zone; a time without an offset is a time on the team's clock."""

    def instant(text: str, whole_day_end: bool) -> datetime:
        if "T" not in text:
            d = date.fromisoformat(text) + timedelta(days=1 if whole_day_end else 0)
            return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)

    return instant(window[0], False), instant(window[1], True)
