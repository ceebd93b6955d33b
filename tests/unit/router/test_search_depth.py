"""The agent search looks past at most ``SEARCH_DEPTH`` unsuitable agents in one heap; past
that it must still find an eligible free agent if one exists (the rarest-skill fallback)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from router import matching
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, holder

AUTO = RouterPolicy(offer_channels=())


def crowd(log: Log, n: int, level: int = 3, **kwargs: object) -> None:
    """``n`` free agents with billing only, all ahead of 'z…' in heap order (same load, lower id)."""
    for k in range(n):
        log.extend(agent(f"a{k:04}", skills={"billing": level}, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("crowd_size", [255, 257, 300])
def test_an_agent_behind_more_than_search_depth_unsuitable_agents_is_found(crowd_size: int) -> None:
    log = Log()
    crowd(log, crowd_size)
    log.extend(agent("zed", skills={"billing": 3, "account": 1}))
    assert log.step(at(1), AUTO) == []  # the first round (a full look) has nothing to do
    # billing is the primary skill (the highest minimum): its heap holds the crowd first.
    log.extend(conversation("c1", channel="email", skills={"billing": 2, "account": 1}, when=at(2)))
    log.step(at(3), AUTO)
    assert holder(log, "c1") == "zed"


def test_the_fallback_keeps_the_ranking_among_agents_found_by_the_rarer_skill() -> None:
    log = Log()
    crowd(log, 300, level=5)
    # The level-5 heap is crowded, so the fallback decides: the higher billing level wins
    # ("highest" fit) whatever the heap the fallback scanned.
    log.extend(agent("zed", skills={"billing": 4, "account": 1}))
    log.extend(agent("zoe", skills={"billing": 5, "account": 1}))
    log.extend(agent("zak", skills={"billing": 2, "account": 4}))  # below the billing minimum
    log.step(at(1), AUTO)
    log.extend(conversation("c1", channel="email", skills={"billing": 3, "account": 1}, when=at(2)))
    log.step(at(3), AUTO)
    assert holder(log, "c1") == "zoe"


def test_the_fallback_respects_the_tier_order() -> None:
    log = Log()
    crowd(log, 300)
    log.extend(agent("zed", skills={"billing": 3, "account": 1}, tier=2))
    log.extend(agent("zia", skills={"billing": 3, "account": 1}, tier=1))
    log.step(at(1), AUTO)
    log.extend(conversation("c1", channel="email", skills={"billing": 2, "account": 1}, when=at(2)))
    log.step(at(3), AUTO)
    assert holder(log, "c1") == "zia"


def test_more_than_search_depth_agents_used_up_in_one_round_do_not_hide_a_free_one() -> None:
    """Depth can also be exhausted by agents given work earlier in the same round."""
    log = Log()
    crowd(log, 300, capacity={"email": 1})
    log.step(at(1), AUTO)
    # 300 conversations take the crowd's only slots in one round; zed (with a free slot) must
    # still get the 301st, routed in that same round from another queue.
    log.extend(agent("zed", skills={"billing": 3}, capacity={"email": 1}))
    for k in range(300):
        log.extend(conversation(f"c{k:04}", channel="email", skills={"billing": 3}, priority=5, when=at(2)))
    log.extend(conversation("last", channel="email", skills={"billing": 1}, when=at(2)))
    log.step(at(3), AUTO)
    log.step(at(4), AUTO)
    assert holder(log, "last") is not None
    assert sum(c.status == "assigned" for c in log.state.conversations.values()) == 301


def test_with_a_small_depth_the_fallback_finds_the_only_qualified_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matching, "SEARCH_DEPTH", 2)
    log = Log()
    crowd(log, 10)
    log.extend(agent("zed", skills={"billing": 3, "account": 1}))
    log.step(at(1), AUTO)
    log.extend(conversation("c1", channel="email", skills={"billing": 2, "account": 1}, when=at(2)))
    log.step(at(3), AUTO)
    assert holder(log, "c1") == "zed"


def test_nobody_qualified_means_the_conversation_waits() -> None:
    log = Log()
    crowd(log, 300)
    log.step(at(1), AUTO)
    log.extend(conversation("c1", channel="email", skills={"billing": 2, "account": 1}, when=at(2)))
    assert log.step(at(3), AUTO) == []
    assert log.state.conversations["c1"].status == "waiting"
    # and still nobody once every default step is reached
    for second in range(10, 4000, 60):
        log.step(at(3) + timedelta(seconds=second), AUTO)
    assert log.state.conversations["c1"].status == "waiting"
