"""Snapshots of the routing state: one msgpack encode, so restart time does not depend
on the length of the log (the state carries ``last_seq``: replay resumes after it).

The snapshot holds the indexes as well as the facts, so a snapshot written by a version
that files things differently must not be used: ``load`` raises ``IncompatibleSnapshot``
and the caller rebuilds the state from the log instead (then writes a fresh snapshot).
"""

from __future__ import annotations

import msgspec

from events.codec import known_tag
from router.state import RouterState

# Bump whenever the meaning or layout of RouterState's indexes changes.
# 2: ConversationView.declined (which exclusions forgive_declines may lift).
# 3: free-agent heap entries lead with the agent's level in the heap's language.
# 4: free-agent entries may rank an agent better than it now ranks (read them re-ranked,
#    see router.index.load_changed); queue_lookup is grouped by a second required skill.
# (AgentView.active and AgentView.wrap_up are facts with defaults, not index layout: a
# format-4 snapshot without them reads as active agents with no wrap-up, which is what they
# were, since no earlier router had events that set them. So the format stays 4.)
# 5: RouterState.skipped_types. A state folded while another version wrote events this one
#    did not know has them as gaps; a format-4 snapshot cannot say whether it has any (an
#    operator audit: an agent deactivated during a rolling upgrade kept getting work).
# 6: ConversationView.folded and CustomerView.closed (``router.replays``): a format-5 state
#    does not know which conversations were resolved, so a re-published opening would reopen one.
FORMAT = 6


class IncompatibleSnapshot(ValueError):
    """Written by another version of the router (or not a router snapshot): replay the log."""


class UnreadableSnapshot(IncompatibleSnapshot):
    """Not a router snapshot at all (damaged, or something else stored under its name)."""


class _Snapshot(msgspec.Struct, kw_only=True):
    format: int
    state: RouterState


class _Format(msgspec.Struct):
    """Only the format of a snapshot: read before the state, whose layout another format may
    not share (a field of another type would fail the decode, reported as damage)."""

    format: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Snapshot)
_format_decoder = msgspec.msgpack.Decoder(_Format)


def dump(state: RouterState) -> bytes:
    return _encoder.encode(_Snapshot(format=FORMAT, state=state))


def load(data: bytes) -> RouterState:
    check_format(data)
    try:
        snap = _decoder.decode(data)
    except msgspec.DecodeError as err:  # ValidationError is a DecodeError
        raise UnreadableSnapshot(f"not a router snapshot of format {FORMAT}: {err}") from err
    check_skipped(snap.state)
    return snap.state


def check_format(data: bytes) -> None:
    """Raise ``IncompatibleSnapshot`` if ``data`` is a snapshot of another format (written by
    another version: nothing is wrong with it), ``UnreadableSnapshot`` if it is no snapshot."""
    try:
        found = _format_decoder.decode(data).format
    except msgspec.DecodeError as err:
        raise UnreadableSnapshot(f"not a router snapshot of format {FORMAT}: {err}") from err
    if found != FORMAT:
        raise IncompatibleSnapshot(f"snapshot format {found}, this router reads {FORMAT}")


def check_skipped(state: RouterState) -> None:
    """Raise ``IncompatibleSnapshot`` if ``state`` skipped events this version folds."""
    if now_known := sorted(t for t in state.skipped_types if known_tag(t)):
        first = min(state.skipped_types[t] for t in now_known)
        raise IncompatibleSnapshot(
            f"folded without {', '.join(now_known)} (a newer writer's, from event {first}), which this version folds"
        )
