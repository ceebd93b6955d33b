"""The API's other folds on a hostile log (see tests/unit/router/test_hostile_log.py): well-typed
events that contradict the log before them, handed one at a time to every fold the API's one
log reader feeds (``LiveState._apply_one``: an event a fold cannot apply is quarantined and that
fold skips it) and to the live streams. Then what users read from them must hold outside that
boundary: custody's access facts, the resolved-unassigned look-ups, the closing notices and
replies due, the workspace items, the token list, the holder journal and the stream's frames;
every snapshot dump loads back to the same thing; every subject a fold builds from an event's
ids is a valid NATS subject; and the folds' indexes agree with themselves (nothing kept that
nothing will ever take out)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import subjects
from events.codec import Undecodable, decode_log_event, encode
from events.model import (
    AgentOffered,
    AgentTokenIssued,
    AgentTokenRevoked,
    ConversationAssigned,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    DecisionReason,
    DeliveryFailed,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    ReplyRequested,
)
from events.stored import StoredEvent
from router import snapshot as router_snapshot
from router.fold import evolve
from router.state import RouterState, reading_only
from services.api import view_snapshot
from services.api.closings import PendingClosings
from services.api.custody import Custody
from services.api.known_conversations import ResolvedUnassigned
from services.api.replies import PendingReplies, earlier_unsent, outcome_recorded
from services.api.stream import HolderJournal, event_json, frame
from services.api.tokens import TokenTable, record_json
from services.api.workspace import WorkspaceFacts
from services.delivery.notices import Holders
from tests.unit.router.test_hostile_log import (
    AGENTS,
    CONVERSATIONS,
    CUSTOMERS,
    HOSTILE,
    LOOSE_AGENTS,
    _event_strategy,
    aimed_at,
    valid_lifecycle,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
KEY = b"k" * 32
# Ids a writer may put in an event's body (only the subject's ids are checked when decoded).
ODD_IDS = ("a0", "", "a b", "a.b", "*", ">", "ä")
SUBJECT_TOKENS = subjects.is_token
# The events these folds read, drawn as often as the whole union (most of which they skip).
READ_HERE = st.one_of(
    *(
        _event_strategy(cls)
        for cls in (
            AgentOffered,
            AgentTokenIssued,
            AgentTokenRevoked,
            ConversationAssigned,
            ConversationOpened,
            ConversationReleased,
            ConversationResolved,
            ConversationTransferred,
            CustomerProfileUpdated,
            DeliveryFailed,
            MessageReceived,
            MessageSent,
            OfferAccepted,
            OfferDeclined,
            ReplyRequested,
        )
    )
)


class ApiFolds:
    """Every fold ``LiveState`` feeds, in the order ``build_app`` installs them, each behind
    its own boundary, and a live stream following everything (``stream.send``)."""

    def __init__(self) -> None:
        self.clock = T0
        self.seq = 0
        self.view = reading_only(RouterState())
        self.custody = Custody()
        self.known = ResolvedUnassigned(self.custody, lambda: self.view)
        self.closings = PendingClosings(lambda: self.clock)
        self.replies = PendingReplies()
        self.workspace = WorkspaceFacts(None)
        self.tokens = TokenTable(KEY)
        self.journal = HolderJournal(keep=50)
        self.stream = Holders()
        self.folds: list[Callable[[StoredEvent], None]] = [
            self.custody.apply,
            self.known.apply,
            self.closings.apply,
            self.replies.apply,
            self.workspace.apply,
            self.tokens.apply,
            self.journal.apply,
        ]
        self.refused: list[str] = []
        self.stored: list[StoredEvent] = []
        self.frames: list[bytes] = []

    def append(self, event: LogEvent) -> None:
        if isinstance(event, AgentTokenIssued) and event.proof == "":
            # As the API issues it (the proof is the API's): a forged one is refused, tested apart.
            proof = self.tokens.proof(event.agent_id, event.token_id, event.token_hash, event.role)
            event = msgspec.structs.replace(event, proof=proof)
        subject = subjects.for_event(event)
        decoded = decode_log_event(encode(event), subject=subject)
        if isinstance(decoded, Undecodable):
            return
        self.seq += 1
        stored = StoredEvent(seq=self.seq, subject=subject, event=decoded)
        self.stored.append(stored)
        try:
            self.view = evolve(self.view, stored.seq, stored.subject, stored.event)
        except Exception:
            self.view.last_seq = max(self.view.last_seq, stored.seq)
        for fold in self.folds:
            try:  # LiveState._apply_one
                fold(stored)
            except Exception as err:
                self.refused.append(f"{type(decoded).__name__}: {err!r}")
        # A live stream, outside any boundary (stream.send): every frame it would send.
        self.stream.concerned(stored)
        self.frames.append(frame(stored.seq, "x", event_json(stored)))


def check_folds(api: ApiFolds) -> None:
    custody, now = api.custody, api.clock
    # Custody: what the access rules and the resolved list read; its indexes agree with its facts.
    for agent_id in (*LOOSE_AGENTS, *ODD_IDS):
        for cid in CONVERSATIONS:
            custody.held(agent_id, cid)
        assert custody.conversations_of(agent_id) == {c for c, h in custody.holders.items() if agent_id in h}
        msgspec.json.encode(custody.resolved_of(agent_id, 500))
        msgspec.json.encode(sorted(custody.customers_served(agent_id)))
    assert set(custody.customer_of) == set(custody.holders)
    assert set(custody.resolved) <= set(custody.holders)
    again = Custody()
    again.load(custody.dump())
    assert (again.customer_of, again.holders, again.resolved, again.held_by, again.served) == (
        custody.customer_of,
        custody.holders,
        custody.resolved,
        custody.held_by,
        custody.served,
    )
    # The conversations the API knows resolved without a holder.
    for cid in (*CONVERSATIONS, "c9"):
        api.known.customer(cid)
    known = ResolvedUnassigned(custody, lambda: api.view)
    known.load(api.known.dump())
    assert known.customer_of == api.known.customer_of
    # Closing notices: each due one names the subject its route is read from.
    for closing in api.closings.due():
        subjects.conversation(closing.event.customer_id, closing.event.conversation_id)
        assert SUBJECT_TOKENS(closing.event.conversation_id)
    assert api.closings.refeed_from() >= 1
    # Replies waiting: every index entry is one the relay can still take out, subjects valid.
    replies = api.replies
    indexed = [p for same in replies.by_conversation.values() for p in same.values()]
    assert sorted(id(p) for p in indexed) == sorted(id(p) for p in replies.by_id.values())
    assert all(replies.by_conversation.values())
    for subject in replies.refeed_subjects():
        assert subjects.parse_conversation_subject(subject) is not None
    for pending in replies.due(now, 30.0):
        replies.held_back(pending, now)
        earlier_unsent(api.stored, pending.reply, now)
    # Workspace: items and the subjects fed again after a snapshot.
    for cid, facts in api.workspace.conversations.items():
        msgspec.json.encode(api.workspace.item_json(api.view, cid, facts.customer_id))
    for subject in api.workspace.refeed_subjects():
        assert subjects.parse_conversation_subject(subject) is not None
    # Tokens: the operator's list, and the snapshot.
    for agent_id in (*LOOSE_AGENTS, *ODD_IDS):
        msgspec.json.encode([record_json(r) for r in api.tokens.of_agent(agent_id)])
    tokens = TokenTable(KEY)
    tokens.load(api.tokens.dump())
    assert tokens.by_id == api.tokens.by_id and tokens.by_hash == api.tokens.by_hash
    # The holder journal: a resume at any position, and its snapshot; the live stream agrees.
    assert api.journal.holders.holder == api.stream.holder
    for after in range(0, api.seq + 2):
        held = api.journal.holders_at(after)
        if held is not None:
            msgspec.json.encode(held)
    assert len(api.journal.changes) <= api.journal.keep
    journal = HolderJournal()
    journal.load(api.journal.dump())
    assert journal.holders.holder == api.journal.holders.holder
    check_view_snapshot(api)


def check_view_snapshot(api: ApiFolds) -> None:
    """The API view's snapshot (``LiveState._save_soon``) loads; the folds kept out of it, fed
    again only their subjects' events up to it (``_feed_subjects_again``), are what they were."""
    snap = view_snapshot.ViewSnapshot(
        format=view_snapshot.FORMAT,
        router_format=router_snapshot.FORMAT,
        position=api.seq,
        state=api.view,
        dumps={"custody": api.custody.dump(), "agent_tokens": api.tokens.dump(), "stream": api.journal.dump()},
        refeed_subjects={"replies": api.replies.refeed_subjects(), "workspace": api.workspace.refeed_subjects()},
    )
    loaded = view_snapshot.load(view_snapshot.dump(snap))
    assert loaded.dumps == snap.dumps and loaded.refeed_subjects == snap.refeed_subjects
    replies, workspace = PendingReplies(), WorkspaceFacts(None)
    for fold, wanted in (
        (replies.apply, loaded.refeed_subjects["replies"]),
        (workspace.apply, loaded.refeed_subjects["workspace"]),
    ):
        for stored in api.stored:
            if stored.seq >= wanted.get(stored.subject, api.seq + 1):
                fold(stored)
    replies.due(api.clock, 30.0)  # as the live fold was asked: those past the horizon forgotten
    assert {rid: p.seq for rid, p in replies.by_id.items()} == {rid: p.seq for rid, p in api.replies.by_id.items()}
    assert workspace.conversations == api.workspace.conversations


def run_api(data: st.DataObject, ops: list[str]) -> ApiFolds:
    api = ApiFolds()
    for op in ops:
        if op == "valid":
            for event in valid_lifecycle(data, api.clock):
                api.append(event)
        elif op == "hostile":
            event = aimed_at(data, api.view, data.draw(st.one_of(HOSTILE, READ_HERE)))
            odd = "agent_id" in event.__struct_fields__ and not isinstance(event, subjects.AGENT_FACTS)
            if odd and data.draw(st.booleans()):
                event = msgspec.structs.replace(event, agent_id=data.draw(st.sampled_from(ODD_IDS)))  # type: ignore[call-arg]
            api.append(event)
        elif op == "replay" and api.stored:
            api.append(data.draw(st.sampled_from(api.stored)).event)  # type: ignore[arg-type]
        elif op == "wait":
            api.clock += timedelta(seconds=data.draw(st.sampled_from((1, 301, 3601, 90_000))))
    return api


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    ops=st.lists(
        st.sampled_from(("valid", "valid", "hostile", "hostile", "hostile", "replay", "wait")), min_size=5, max_size=50
    ),
)
def test_every_api_fold_of_a_hostile_log_still_answers(data: st.DataObject, ops: list[str]) -> None:
    api = run_api(data, ops)
    check_folds(api)
    for seq, raw in enumerate(api.frames, 1):
        assert raw.startswith(f"id: {seq}\n".encode())


def test_customers_and_conversations_pools_are_tokens() -> None:
    assert all(map(SUBJECT_TOKENS, (*CUSTOMERS, *CONVERSATIONS, *AGENTS)))


# --- what it found ------------------------------------------------------------------------

IDS = {"at": T0, "conversation_id": "c0"}


def test_an_event_naming_another_customers_held_conversation_leaves_custody_alone() -> None:
    """Folded, the conversation moved to the other customer (its customer look-up, the access
    of its agents) and its agent served both customers until a restart loaded the snapshot."""
    api = ApiFolds()
    reason = DecisionReason(rule="x")
    api.append(ConversationOpened(**IDS, customer_id="k0", channel="chat", contact="x"))  # type: ignore[arg-type]
    api.append(ConversationAssigned(**IDS, customer_id="k0", agent_id="a0", channel="chat", reason=reason))  # type: ignore[arg-type]
    api.append(ConversationAssigned(**IDS, customer_id="k1", agent_id="a1", channel="chat", reason=reason))  # type: ignore[arg-type]
    api.append(ConversationResolved(**IDS, customer_id="k1", agent_id="a1"))  # type: ignore[arg-type]
    assert api.custody.customer_of == {"c0": "k0"} and api.custody.holders == {"c0": ["a0"]}
    assert api.custody.resolved == {} and not api.custody.held("a1", "c0")
    assert api.custody.customers_served("a0") == {"k0"}
    check_folds(api)


def test_a_request_reusing_a_waiting_reply_id_is_not_kept_for_good() -> None:
    """The first stayed in its conversation's index once the second replaced it by id: nothing
    took it out, and it held that conversation's later replies back."""
    api = ApiFolds()
    for cid in ("c0", "c1"):
        api.append(ReplyRequested(at=T0, customer_id="k0", conversation_id=cid, channel="chat", reply_id="r1"))
    api.append(MessageSent(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r1"))
    assert api.replies.by_id == {} and api.replies.by_conversation == {}
    api.append(ReplyRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r2"))
    assert not api.replies.by_id["r2"].held
    check_folds(api)


def test_a_request_on_another_customers_conversation_of_the_same_id_holds_no_reply_back() -> None:
    """The replies waiting were indexed by conversation id alone: a hand-written request reusing
    the id under another customer held this conversation's replies back (up to ``ORDER_WAIT``)."""
    api = ApiFolds()
    api.append(ReplyRequested(at=T0, customer_id="k1", conversation_id="c0", channel="chat", reply_id="r1"))
    api.append(ReplyRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r2"))
    mine = api.replies.by_id["r2"]
    assert not mine.held and not api.replies.held_back(mine, T0)
    check_folds(api)


def test_a_resolution_on_another_customers_conversation_of_the_same_id_leaves_its_notice_owed() -> None:
    """Resolutions owing a closing notice were kept by conversation id alone: a hand-written one
    under another customer, folded first, was kept instead of the real one (whose notice never
    went), and one folded after the real one's notice was queued took its place."""
    api = ApiFolds()
    api.append(ConversationResolved(at=T0, customer_id="k1", conversation_id="c0"))
    api.append(ConversationResolved(at=T0, customer_id="k0", conversation_id="c0"))
    owed = {(c.event.customer_id, c.event.conversation_id) for c in api.closings.due()}
    assert owed == {("k0", "c0"), ("k1", "c0")}
    check_folds(api)


def test_an_event_naming_another_customers_open_conversation_leaves_its_work_item_alone() -> None:
    """The other customer's address and words were shown in this customer's work item, and
    its resolution took the item's facts away."""
    api = ApiFolds()
    api.append(ConversationOpened(**IDS, customer_id="k0", channel="sms", contact="sms:+15550100142"))  # type: ignore[arg-type]
    api.append(ConversationOpened(**IDS, customer_id="k1", channel="sms", contact="sms:+15550109999"))  # type: ignore[arg-type]
    message = MessageReceived(
        **IDS,  # type: ignore[arg-type]
        customer_id="k1",
        channel="sms",
        message_id="m1",
        provider_message_id="p1",
        text="not k0's words",
    )
    api.append(message)
    item = api.workspace.item_json(api.view, "c0", "k0")
    assert item["customer"]["address"] == "+1 •••• 0142" and item["preview"] is None
    api.append(ConversationResolved(**IDS, customer_id="k1"))  # type: ignore[arg-type]
    assert api.workspace.conversations["c0"].customer_id == "k0"
    check_folds(api)


class _Log:
    """A store's ``read_direct`` over a list of stored events (``replies.outcome_recorded``)."""

    def __init__(self, stored: list[StoredEvent]) -> None:
        self.stored = stored

    async def read_direct(self, subject: str, from_seq: int = 1) -> list[StoredEvent]:
        return [s for s in self.stored if s.subject == subject and s.seq >= from_seq]


def test_a_request_re_published_after_its_outcome_is_not_queued_again() -> None:
    """The fold holds it as waiting again, at its new sequence; the relay read the log for an
    outcome after that sequence alone, found none, and sent the reply a second time."""
    api = ApiFolds()
    request = ReplyRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r1")
    api.append(request)
    api.append(MessageSent(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r1"))
    api.append(request)  # the same fact again, later
    waiting = api.replies.by_id["r1"]
    deps = SimpleNamespace(store=_Log(api.stored))
    assert asyncio.run(outcome_recorded(deps, waiting.seq, waiting.reply))  # type: ignore[arg-type]


def test_an_outcome_on_another_conversation_leaves_a_waiting_reply_waiting() -> None:
    """It took the reply out: lost on its way, it was never queued again (the relay looks for
    its outcome on its own conversation alone)."""
    api = ApiFolds()
    api.append(ReplyRequested(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r1"))
    api.append(MessageSent(at=T0, customer_id="k1", conversation_id="c1", channel="chat", reply_id="r1"))
    api.append(DeliveryFailed(at=T0, customer_id="k0", conversation_id="c1", channel="chat", reply_id="r1", reason="x"))
    assert list(api.replies.by_id) == ["r1"]
    api.append(MessageSent(at=T0, customer_id="k0", conversation_id="c0", channel="chat", reply_id="r1"))
    assert api.replies.by_id == {} and api.replies.by_conversation == {}
    check_folds(api)


def test_an_event_on_another_customers_conversation_of_a_held_id_is_not_streamed_to_its_holder() -> None:
    """The live stream sent the other conversation's messages to the agent holding this one,
    and its resolution ended her hold (every later event of hers went unsent)."""
    api = ApiFolds()
    reason = DecisionReason(rule="x")
    api.append(AgentOffered(**IDS, customer_id="k0", agent_id="a0", expires_at=T0, reason=reason))  # type: ignore[arg-type]
    message = MessageReceived(
        **IDS,  # type: ignore[arg-type]
        customer_id="k1",
        channel="chat",
        message_id="m1",
        provider_message_id="p1",
        text="k1's words",
    )
    assert (
        api.stream.concerned(StoredEvent(seq=api.seq + 1, subject=subjects.for_event(message), event=message)) == set()
    )
    api.append(message)
    api.append(ConversationResolved(**IDS, customer_id="k1"))  # type: ignore[arg-type]
    assert api.journal.holders.holder == {"c0": "a0"} == api.stream.holder
    own = msgspec.structs.replace(message, customer_id="k0")
    assert api.stream.concerned(StoredEvent(seq=api.seq + 1, subject=subjects.for_event(own), event=own)) == {"a0"}
    check_folds(api)
