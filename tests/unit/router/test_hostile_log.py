"""A hostile log: events that decode (well-typed members of the ``LogEvent`` union, on the
subject their ids name) but make no sense after what came before them: an offer or an
assignment of a conversation never opened or already resolved, to an agent never registered
or at capacity, an agent fact for an unknown agent, a resolution twice, a transfer to the
holder, capacities, tiers, priorities and steps at extremes, empty ids, merges into oneself
or in a cycle, events out of order or repeated.

They are mixed with valid lifecycles and rounds of decide folded back in, and each is applied
the way the router and the API's view apply it (``evolve``; an exception quarantines the event
and only its sequence counts). Then:

- an event the fold refused left the state exactly as it was (its snapshot encoding);
- nothing outside that boundary raises: decide for the router's policies, the snapshot round
  trip (equal to the state), and what the API's view serves from the read-model fold (agents,
  conversations with their effective requirements and why they wait, queues).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import subjects
from events.codec import Undecodable, decode_log_event, encode
from events.model import (
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationEvent,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    Requirements,
    RoutingRequested,
)
from router import snapshot
from router.decide import decide
from router.fold import evolve
from router.index import signature
from router.policy import RELAXATIONS, RouterPolicy
from router.state import RouterState, reading_only
from services.api.views import agent_json, conversation_json, effective_json, queues_json, waiting_because_json
from tests.unit.router.helpers import T0, Log
from tests.unit.router.test_properties import POLICIES, check_holding, check_indexes

CUSTOMERS = ("k0", "k1", "k2")
CONVERSATIONS = ("c0", "c1", "c2", "c3")
AGENTS = ("a0", "a1", "a2")
# Ids in an event's body (not its subject): anything goes, the empty one too.
LOOSE_AGENTS = (*AGENTS, "", "ghost")
CHANNELS = ("chat", "sms", "email", "telegram")
SKILLS = ("billing", "technical", "")
LANGUAGES = ("en", "es", "")
POLICIES_HERE = (*POLICIES, RouterPolicy(wrap_up_seconds={"chat": 30.0, "email": 300.0}))

EXTREME_INTS = st.sampled_from((-(2**62), -1, 0, 1, 2, 3, 5, 10**6, 2**62))
SMALL_OR_EXTREME = st.one_of(st.integers(-2, 4), EXTREME_INTS)
# Times an event may carry: near the history's clock, and anything a decoder accepts
# (an event's own ``at`` is checked to 1970-2200 by the codec; others are not).
EXTREME_TIMES = st.sampled_from(
    (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2199, 12, 31, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
)
NEAR_TIMES = st.integers(-3600, 4 * 3600).map(lambda s: T0 + timedelta(seconds=s))
TIMES = st.one_of(NEAR_TIMES, NEAR_TIMES, EXTREME_TIMES)
AT_TIMES = st.one_of(NEAR_TIMES, st.sampled_from((datetime(1970, 1, 1, tzinfo=UTC), datetime(2199, 1, 1, tzinfo=UTC))))

profiles = st.builds(
    AgentProfile,
    name=st.sampled_from(("", "Ann")),
    skills=st.dictionaries(st.sampled_from(SKILLS), SMALL_OR_EXTREME, max_size=2),
    languages=st.dictionaries(st.sampled_from(LANGUAGES), SMALL_OR_EXTREME, max_size=2),
    tier=SMALL_OR_EXTREME,
    capacity=st.dictionaries(st.sampled_from(CHANNELS), SMALL_OR_EXTREME, max_size=3),
    max_total=st.one_of(st.none(), SMALL_OR_EXTREME),
)
requirements = st.builds(
    Requirements,
    skills=st.dictionaries(st.sampled_from(SKILLS), SMALL_OR_EXTREME, max_size=2),
    language=st.sampled_from((*LANGUAGES, None)),
    fallback_languages=st.lists(st.sampled_from(LANGUAGES), max_size=2).map(tuple),
    min_tier=SMALL_OR_EXTREME,
    priority=SMALL_OR_EXTREME,
    sla_due=st.one_of(st.none(), TIMES),
    preferred_agent=st.one_of(st.none(), st.sampled_from(LOOSE_AGENTS)),
    excluded_agents=st.lists(st.sampled_from(LOOSE_AGENTS), max_size=2).map(tuple),
)
reasons = st.builds(
    DecisionReason,
    rule=st.sampled_from(("", "best_match")),
    step=SMALL_OR_EXTREME,
    score=st.dictionaries(st.sampled_from(("skill", "")), st.floats(allow_nan=False, allow_infinity=False), max_size=1),
)

# Per field name, what a hostile writer may put there (only fields an event has are used).
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "at": AT_TIMES,
    "customer_id": st.sampled_from(CUSTOMERS),
    "conversation_id": st.sampled_from(CONVERSATIONS),
    "merged_id": st.sampled_from((*CUSTOMERS, "", "k9")),
    "identity": st.sampled_from(("sms:+1", "")),
    "channel": st.sampled_from(CHANNELS),
    "contact": st.sampled_from(("x", "")),
    "public": st.booleans(),
    "message_id": st.sampled_from(("m1", "")),
    "provider_message_id": st.sampled_from(("p1", "")),
    "requirements": requirements,
    "language": st.sampled_from(LANGUAGES),
    "expires_at": TIMES,
    "reason": reasons,
    "step": SMALL_OR_EXTREME,
    "relaxation": st.sampled_from((*RELAXATIONS, "", "bogus")),
    "from_agent": st.one_of(st.none(), st.sampled_from(LOOSE_AGENTS)),
    "to_agent": st.one_of(st.none(), st.sampled_from(LOOSE_AGENTS)),
    "to_skill": st.one_of(st.none(), st.sampled_from(SKILLS)),
    "to_tier": SMALL_OR_EXTREME,
    "transfer_count": SMALL_OR_EXTREME,
    "declined": st.booleans(),
    "reply_id": st.sampled_from(("r1", "")),
    "note_id": st.sampled_from(("n1", "")),
    "text": st.just(""),
    "tier": st.sampled_from(("standard", "gold", "")),
    "flags": st.lists(st.sampled_from(("vip", "media_attention", "")), max_size=2).map(tuple),
    "preferred_language": st.sampled_from((None, *LANGUAGES)),
    "profile": profiles,
    "status": st.sampled_from(("available", "away", "offline")),
    "token_id": st.just("t1"),
    "token_hash": st.just("h"),
    "erased": st.booleans(),
}


def _event_strategy(cls: type) -> st.SearchStrategy[LogEvent]:
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    types = {f.name: repr(f.type) for f in msgspec.structs.fields(cls)}
    nullable = {name for name, kind in types.items() if "None" in kind}
    for name in cls.__struct_fields__:
        if name == "agent_id":
            # On an agent's subject the id must be a token; in a conversation event's body anything.
            strategy = st.sampled_from((*AGENTS, "ghost") if issubclass(cls, subjects.AGENT_FACTS) else LOOSE_AGENTS)
        elif name == "reason" and "DecisionReason" not in types[name]:
            if "None" in types[name]:
                continue  # a language's reason: not folded by anyone tested here
            strategy = st.sampled_from(("", "why"))  # a free text elsewhere
        elif name in FIELDS:
            strategy = FIELDS[name]
        else:
            continue
        kwargs[name] = st.one_of(st.none(), strategy) if name in nullable else strategy
    return st.builds(cls, **kwargs)


HOSTILE = st.one_of(*(_event_strategy(cls) for cls in LogEvent.__args__))  # type: ignore[attr-defined]


def valid_lifecycle(data: st.DataObject, now: datetime) -> list[LogEvent]:
    """A few events a well-behaved writer appends: an agent coming on, a conversation opened."""
    if data.draw(st.booleans()):
        agent_id = data.draw(st.sampled_from(AGENTS))
        profile = AgentProfile(name=agent_id, skills={"billing": 3}, languages={"en": 5})
        return [
            AgentProfileUpdated(at=now, agent_id=agent_id, profile=profile),
            AgentStatusChanged(at=now, agent_id=agent_id, status="available"),
        ]
    customer_id = data.draw(st.sampled_from(CUSTOMERS))
    conversation_id = data.draw(st.sampled_from(CONVERSATIONS))
    ids = {"at": now, "customer_id": customer_id, "conversation_id": conversation_id}
    return [
        ConversationOpened(**ids, channel="chat", contact="x"),  # type: ignore[arg-type]
        RoutingRequested(**ids, channel="chat", requirements=Requirements(skills={"billing": 1}, language="en")),  # type: ignore[arg-type]
    ]


class HostileLog:
    """The router's state and the API view's state, fed one stored event at a time the way
    their services feed them (``router_runner._fold``, ``api.readmodel._apply``)."""

    def __init__(self) -> None:
        self.seq = 0
        self.subject_last: dict[str, int] = {}
        self.router = RouterState()
        self.view = reading_only(RouterState())
        self.refused: list[tuple[str, str]] = []
        self.events: list[LogEvent] = []

    def append(self, event: LogEvent) -> None:
        subject = subjects.for_event(event)
        decoded = decode_log_event(encode(event), subject=subject)
        if isinstance(decoded, Undecodable):
            return  # the store quarantines what does not decode: not what this test is about
        self.seq += 1
        self.events.append(decoded)
        self.subject_last[subject] = self.seq
        self.router = self._fold(self.router, subject, decoded)
        self.view = self._fold(self.view, subject, decoded)

    def _fold(self, state: RouterState, subject: str, event: LogEvent | Any) -> RouterState:
        before = snapshot.dump(state)
        try:
            return evolve(state, self.seq, subject, event)
        except Exception as err:  # the services' boundary: quarantined, its sequence counts
            self.refused.append((type(event).__name__, repr(err)))
            after = snapshot.dump(msgspec.structs.replace(state, last_seq=snapshot.load(before).last_seq))
            assert after == before, f"{type(event).__name__} raised {err!r} after changing the state"
            state.last_seq = max(state.last_seq, self.seq)
            return state

    def round(self, now: datetime, policy: RouterPolicy) -> None:
        """decide on the router's state (outside the quarantine: it must not raise), its
        decisions appended as the runner appends them (a stale expected sequence: a conflict)."""
        for decision in decide(self.router, now, policy):
            subject = subjects.for_event(decision.event)
            if decision.expected is not None and self.subject_last.get(subject, 0) != decision.expected:
                continue
            self.append(decision.event)


def check_outside_the_boundary(log: HostileLog, now: datetime, policy: RouterPolicy) -> None:
    """What runs on the folded states outside any quarantine must not raise, and the state's
    own bookkeeping still agrees with itself (loads with what agents hold, indexes with facts),
    whatever the facts say."""
    as_log = Log()
    as_log.state = log.router
    check_holding(as_log)
    check_indexes(as_log)
    for conversation_id, conv in log.router.conversations.items():
        # decide appends on the conversation's subject expecting this sequence there.
        subject = subjects.conversation(conv.customer_id, conversation_id)
        assert conv.subject_seq == log.subject_last.get(subject), (conversation_id, subject)
        if conv.status == "waiting" and conv.queue_key:  # queued by what it is now
            assert log.router.queue_signatures[conv.queue_key] == signature(log.router, conv), conversation_id
    loaded = snapshot.load(snapshot.dump(log.router))
    assert loaded == log.router
    snapshot.load(snapshot.dump(log.view))
    state = log.view
    for agent_id, agent in state.agents.items():
        msgspec.json.encode(agent_json(agent_id, agent))
    for conversation_id, conv in state.conversations.items():
        msgspec.json.encode(conversation_json(conversation_id, conv))
        msgspec.json.encode(effective_json(state, conv, policy))
        msgspec.json.encode(waiting_because_json(state, conv, now, policy))
    msgspec.json.encode(queues_json(state, now, policy))
    # A router started from the snapshot (a full look at everything) decides without raising.
    decide(loaded, now, policy)


OPS = ("valid", "valid", "hostile", "hostile", "hostile", "round", "wait", "replay")


def aimed_at(data: st.DataObject, state: RouterState, event: LogEvent) -> LogEvent:
    """``event``, most times about a conversation the router holds now (its ids, its holder):
    drawn from the pools alone, few would meet one in the state they contradict."""
    conversations = sorted(state.conversations.items())
    if not conversations or not isinstance(event, ConversationEvent) or data.draw(st.integers(0, 3)) == 0:
        return event
    conversation_id, conv = data.draw(st.sampled_from(conversations))
    event = msgspec.structs.replace(event, customer_id=conv.customer_id, conversation_id=conversation_id)
    if "agent_id" in event.__struct_fields__ and conv.agent_id is not None and data.draw(st.booleans()):
        event = msgspec.structs.replace(event, agent_id=conv.agent_id)  # type: ignore[call-arg]
    return event


def run_hostile(data: st.DataObject, policy: RouterPolicy, ops: list[str]) -> None:
    log = HostileLog()
    clock = 0.0
    for op in ops:
        now = T0 + timedelta(seconds=clock)
        if op == "valid":
            for event in valid_lifecycle(data, now):
                log.append(event)
        elif op == "hostile":
            log.append(aimed_at(data, log.router, data.draw(HOSTILE)))
        elif op == "replay" and log.events:
            # A duplicate: an event already on the log, appended again later (same content).
            log.append(data.draw(st.sampled_from(log.events)))
        elif op == "round":
            log.round(now, policy)
        elif op == "wait":
            clock += data.draw(st.sampled_from((1.0, 31.0, 301.0, 3601.0)))
    now = T0 + timedelta(seconds=clock)
    log.round(now, policy)
    log.round(now + timedelta(hours=2), policy)
    check_outside_the_boundary(log, now + timedelta(hours=2), policy)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES_HERE),
    ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=60),
)
def test_a_hostile_log_is_quarantined_or_folded_without_breaking_what_comes_after(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    run_hostile(data, policy, ops)


@settings(max_examples=len(LogEvent.__args__) * 5, deadline=None)  # type: ignore[attr-defined]
@given(data=st.data(), cls=st.sampled_from(LogEvent.__args__))  # type: ignore[attr-defined]
def test_every_event_type_is_drawn_and_decodes(data: st.DataObject, cls: type) -> None:
    """Every member of the union can be drawn (a new event type is generated too) and what is
    drawn decodes, at least with the first choice of each field: the fold is what is tested."""
    event = data.draw(_event_strategy(cls))
    assert isinstance(event, cls)
    plain = msgspec.structs.replace(event, at=T0)
    decoded = decode_log_event(encode(plain), subject=subjects.for_event(plain))
    assert not isinstance(decoded, Undecodable), decoded.error


# --- what it found ------------------------------------------------------------------------


def _assigned_chat(log: HostileLog) -> None:
    for event in (
        *agent_events("a0"),
        ConversationOpened(at=T0, customer_id="k0", conversation_id="c0", channel="chat", contact="x"),
        RoutingRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", requirements=Requirements()),
        ConversationAssigned(
            at=T0,
            customer_id="k0",
            conversation_id="c0",
            agent_id="a0",
            channel="chat",
            reason=DecisionReason(rule="x"),
        ),
    ):
        log.append(event)
    assert log.router.agents["a0"].load == {"chat": 1}


def agent_events(agent_id: str, tier: int = 1) -> list[LogEvent]:
    profile = AgentProfile(name=agent_id, skills={"billing": 3}, languages={"en": 5}, tier=tier)
    return [
        AgentProfileUpdated(at=T0, agent_id=agent_id, profile=profile),
        AgentStatusChanged(at=T0, agent_id=agent_id, status="available"),
    ]


def test_a_routing_request_naming_another_channel_moves_the_holders_slot() -> None:
    """It moved the conversation alone: the agent's chat slot stayed taken for good, and the
    resolution freed an sms slot she did not hold."""
    log = HostileLog()
    _assigned_chat(log)
    ids = {"at": T0, "customer_id": "k0", "conversation_id": "c0"}
    log.append(RoutingRequested(**ids, channel="sms", requirements=Requirements()))  # type: ignore[arg-type]
    assert log.router.agents["a0"].load == {"sms": 1}
    log.append(ConversationResolved(**ids))  # type: ignore[arg-type]
    assert log.router.agents["a0"].load == {} and log.view.agents["a0"].load == {}
    check_outside_the_boundary(log, T0, RouterPolicy())


def test_an_opening_after_its_routing_request_files_the_conversation_by_its_channel() -> None:
    log = HostileLog()
    ids = {"at": T0, "customer_id": "k0", "conversation_id": "c0"}
    log.append(RoutingRequested(**ids, channel="chat", requirements=Requirements()))  # type: ignore[arg-type]
    log.append(ConversationOpened(**ids, channel="email", contact="x", public=True))  # type: ignore[arg-type]
    conv = log.router.conversations["c0"]
    assert log.router.queue_signatures[conv.queue_key].channel == "email"
    check_outside_the_boundary(log, T0, RouterPolicy())


def test_an_agent_of_a_tier_outside_1_to_3_is_quarantined_before_anything_changes() -> None:
    """A tier of 2**62 made decide walk every tier up to it, in every round: the router stuck."""
    log = HostileLog()
    log.append(ConversationOpened(at=T0, customer_id="k0", conversation_id="c0", channel="chat", contact="x"))
    log.append(
        RoutingRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", requirements=Requirements())
    )
    for event in agent_events("a1", tier=2**62):
        log.append(event)
    assert [name for name, _ in log.refused] == ["AgentProfileUpdated"] * 2  # the router, the view
    assert log.router.agents["a1"].profile.tier == 1  # known by her status alone, with the default profile
    log.round(T0, RouterPolicy())  # returns
    check_outside_the_boundary(log, T0, RouterPolicy())


@example(skill_level=-(2**62), fit="highest")
@example(skill_level=-(2**62), fit="closest")
@settings(max_examples=20, deadline=None)
@pytest.mark.timeout(60)
@given(skill_level=st.integers(-(2**62), 2**62), fit=st.sampled_from(("highest", "closest")))
def test_a_required_skill_level_at_any_extreme_is_looked_for_in_bounded_time(skill_level: int, fit: str) -> None:
    """A requirement of level -2**62 made every search walk the levels up from it: decide
    never returned."""
    log = HostileLog()
    for event in agent_events("a0"):
        log.append(event)
    requirements = Requirements(skills={"billing": skill_level, "technical": skill_level})
    ids = {"at": T0, "customer_id": "k0", "conversation_id": "c0"}
    log.append(ConversationOpened(**ids, channel="chat", contact="x"))  # type: ignore[arg-type]
    log.append(RoutingRequested(**ids, channel="chat", requirements=requirements))  # type: ignore[arg-type]
    policy = RouterPolicy(skill_fit=fit)  # type: ignore[arg-type]
    log.round(T0, policy)
    check_outside_the_boundary(log, T0, policy)


def test_an_event_naming_another_customers_open_conversation_leaves_it_alone() -> None:
    """Folded into it, its subject's sequence became the conversation's expected one: every
    decision on it conflicted, for good."""
    log = HostileLog()
    for event in agent_events("a0"):
        log.append(event)
    ids = {"at": T0, "conversation_id": "c0"}
    log.append(ConversationOpened(**ids, customer_id="k0", channel="chat", contact="x"))  # type: ignore[arg-type]
    log.append(RoutingRequested(**ids, customer_id="k0", channel="chat", requirements=Requirements()))  # type: ignore[arg-type]
    log.append(ConversationResolved(**ids, customer_id="k1"))  # type: ignore[arg-type]
    log.append(RoutingRequested(**ids, customer_id="k1", channel="sms", requirements=Requirements()))  # type: ignore[arg-type]
    conv = log.router.conversations["c0"]
    assert conv.customer_id == "k0" and conv.channel == "chat"
    log.round(T0, RouterPolicy())
    assert log.router.conversations["c0"].agent_id == "a0"  # the assignment stood
    check_outside_the_boundary(log, T0, RouterPolicy())
