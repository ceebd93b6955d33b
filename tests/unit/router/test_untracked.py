"""The router's views are left out of the garbage collector's sight (``gc=False`` in
``router.state``): reference counting frees them, which is only sound while none of them can
be part of a reference cycle, so no view may hold a view or the state."""

from __future__ import annotations

import gc
import typing

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.policy import RouterPolicy
from router.state import AgentView, ConversationView, CustomerView, QueueSignature, RouterState
from tests.unit.router.test_properties import OPS, World, act

UNTRACKED = (AgentView, ConversationView, CustomerView, QueueSignature)


def test_no_view_holds_a_view_or_the_state() -> None:
    names = {cls.__name__ for cls in (*UNTRACKED, RouterState)}
    for cls in UNTRACKED:
        for field, hint in typing.get_type_hints(cls).items():
            assert not any(name in repr(hint) for name in names), f"{cls.__name__}.{field}: {hint!r}"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=40))
def test_the_views_a_fold_makes_are_untracked(data: st.DataObject, ops: list[str]) -> None:
    world = World(RouterPolicy())
    for _ in range(data.draw(st.integers(1, 3))):
        act(world, data, "hire")
    for op in ops:
        act(world, data, op)
    state = world.log.state
    views: list[msgspec.Struct] = [
        *state.agents.values(),
        *state.conversations.values(),
        *state.customers.values(),
        *state.queue_signatures.values(),
    ]
    assert views
    assert not any(gc.is_tracked(view) for view in views)
