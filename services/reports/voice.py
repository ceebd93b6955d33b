"""Voice figures: what the log says about each call, and the call-centre figures from it.

Pure, like ``fold`` and ``metrics``. The voice connector (``connectors.voice``) records a call
as messages on the conversation; only fields the log keeps in clear are read (never a sealed
metadata value, so the figures survive erasure and need no keys):

* metadata ``kind``: ``call`` (the call was queued), ``callback_request`` (the caller pressed 1
  after the wait limit), ``voicemail``, ``transcript``, ``call_status``;
* a ``call_status`` message's ``provider_message_id``, ``<CallSid>:<leg>:<status>``: leg
  ``call`` is the caller's own call (the number's status callback), ``dial`` the agent's leg
  (the bridge's ``<Dial>`` action; ``completed`` there means the agent answered and talked).

Definitions (``services/reports/README.md``, *Voice*):

* **answered**: an agent's leg completed (the caller talked to an agent).
* **answered within SLA**: answered, and the assignment that rang the agent who answered came
  at or before the SLA due time (voice ``[router] sla_seconds``, 20 s by default).
  ``service_level`` = answered within SLA / calls.
* **abandoned**: the caller hung up in the queue: the caller's call ended, no agent ever talked
  to them, and they asked for no callback and left no voicemail. ``abandon_rate`` = abandoned / calls.
* **missed**: over without an agent: abandoned, a callback request or a voicemail.
* **agent_no_answer**: rings of an agent's endpoint that ended busy, no-answer, failed or canceled.
* **handle time**: the assignment that rang the agent who answered to the end of the last
  agent leg (the call completed).
* **callbacks placed**: calls an agent took after the caller had left the queue (callback
  request, voicemail or hang-up): the bridge then rings the agent and dials the customer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec

CALLER_LEG = "call"
AGENT_LEG = "dial"
# "abandoned": the caller hung up in the queue (connectors.voice, the ``<Enqueue>`` action). It
# resolves the conversation, so the caller leg's own "completed", coming after, is not recorded.
ENDED = frozenset({"completed", "canceled", "busy", "no-answer", "failed", "abandoned"})
NOT_ANSWERED = frozenset({"canceled", "busy", "no-answer", "failed"})


class CallFacts(msgspec.Struct, kw_only=True):
    """One voice conversation's call facts (``ConversationFacts.call``)."""

    caller_ended_at: datetime | None = None  # the caller's own call ended (first terminal status)
    callback_requested_at: datetime | None = None
    voicemail_at: datetime | None = None
    last_assigned_at: datetime | None = None  # the assignment now ringing / talking
    answered_assigned_at: datetime | None = None  # the assignment whose agent answered (first talk)
    talk_ended_at: datetime | None = None  # the last agent leg that completed
    agent_no_answer: int = 0
    callback_assigned_at: datetime | None = None  # first assignment after the caller left

    @property
    def answered(self) -> bool:
        return self.talk_ended_at is not None

    @property
    def left_at(self) -> datetime | None:
        """When the caller left the queue without an agent (None: still there, or talked)."""
        if self.answered:
            moments = [self.callback_requested_at, self.voicemail_at]
        else:
            moments = [self.callback_requested_at, self.voicemail_at, self.caller_ended_at]
        present = [m for m in moments if m is not None]
        return min(present) if present else None


def status_of(provider_message_id: str) -> tuple[str, str] | None:
    """(leg, status) of a ``call_status`` message id ``<CallSid>:<leg>:<status>``."""
    parts = provider_message_id.rsplit(":", 2)
    if len(parts) != 3 or parts[1] not in (CALLER_LEG, AGENT_LEG):
        return None
    return parts[1], parts[2]


def note_message(call: CallFacts, kind: str, provider_message_id: str, at: datetime) -> None:
    """A voice message of the conversation (``MessageReceived`` with metadata ``kind``)."""
    match kind:
        case "callback_request":
            call.callback_requested_at = call.callback_requested_at or at
        case "voicemail":
            call.voicemail_at = call.voicemail_at or at
        case "call_status":
            found = status_of(provider_message_id)
            if found is None:
                return
            leg, status = found
            if leg == CALLER_LEG and status in ENDED:
                call.caller_ended_at = call.caller_ended_at or at
            elif leg == AGENT_LEG and status == "completed":
                if call.answered_assigned_at is None:
                    call.answered_assigned_at = call.last_assigned_at
                call.talk_ended_at = at
            elif leg == AGENT_LEG and status in NOT_ANSWERED:
                call.agent_no_answer += 1


def note_assignment(call: CallFacts, at: datetime) -> None:
    """``ConversationAssigned`` or an accepted offer: the bridge rings the agent (or calls back)."""
    call.last_assigned_at = at
    left = call.left_at
    if call.callback_assigned_at is None and left is not None and left <= at:
        call.callback_assigned_at = at


@dataclass(frozen=True)
class CallFigures:
    answered: bool
    answered_within_sla: bool
    abandoned: bool
    missed: bool
    agent_no_answer: int
    voicemail: bool
    callback_requested: bool
    callback_placed: bool
    handle: float | None


def call_figures(call: CallFacts, due: datetime | None) -> CallFigures:
    answered = call.answered
    rang_at = call.answered_assigned_at
    within = answered and due is not None and rang_at is not None and rang_at <= due
    abandoned = (
        not answered
        and call.caller_ended_at is not None
        and call.callback_requested_at is None
        and call.voicemail_at is None
    )
    handle = None
    if rang_at is not None and call.talk_ended_at is not None:
        handle = max(0.0, (call.talk_ended_at - rang_at).total_seconds())
    return CallFigures(
        answered=answered,
        answered_within_sla=within,
        abandoned=abandoned,
        missed=not answered and call.left_at is not None,
        agent_no_answer=call.agent_no_answer,
        voicemail=call.voicemail_at is not None,
        callback_requested=call.callback_requested_at is not None,
        callback_placed=call.callback_assigned_at is not None,
        handle=handle,
    )


@dataclass
class VoiceBucket:
    calls: int = 0
    answered: int = 0
    answered_within_sla: int = 0
    abandoned: int = 0
    missed: int = 0
    agent_no_answer: int = 0
    voicemails: int = 0
    callbacks_requested: int = 0
    callbacks_placed: int = 0
    handle: list[float] = field(default_factory=list)

    def add(self, f: CallFigures) -> None:
        self.calls += 1
        self.answered += f.answered
        self.answered_within_sla += f.answered_within_sla
        self.abandoned += f.abandoned
        self.missed += f.missed
        self.agent_no_answer += f.agent_no_answer
        self.voicemails += f.voicemail
        self.callbacks_requested += f.callback_requested
        self.callbacks_placed += f.callback_placed
        if f.handle is not None:
            self.handle.append(f.handle)
