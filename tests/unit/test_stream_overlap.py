"""``events.stream_overlap.subjects_overlap`` against a brute force: two subject patterns
overlap exactly when some concrete subject matches both (NATS's own wildcard rules)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from events.stream_overlap import overlapping, subjects_overlap

TOKENS = ("a", "b")
pattern = (
    st.lists(st.sampled_from(("a", "b", "*", ">")), min_size=1, max_size=4)
    .filter(
        lambda tokens: ">" not in tokens[:-1]  # ">" only as the last token, as NATS requires
    )
    .map(".".join)
)


def matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def brute_force(a: str, b: str) -> bool:
    # Subjects up to 5 tokens over "a", "b" and one token neither pattern names ("c").
    return any(
        matches(a, ".".join(tokens)) and matches(b, ".".join(tokens))
        for n in range(1, 6)
        for tokens in itertools.product((*TOKENS, "c"), repeat=n)
    )


@given(pattern, pattern)
def test_two_patterns_overlap_exactly_when_a_subject_matches_both(a: str, b: str) -> None:
    assert subjects_overlap(a, b) == brute_force(a, b)
    assert subjects_overlap(a, b) == subjects_overlap(b, a)


def test_a_neighbour_capturing_relaydesks_subjects_is_named_with_what_it_takes() -> None:
    streams = [("ORDERS", ["orders.>"]), ("EVERYTHING_RD", ["rd.*.sms", "audit.>"]), ("WIDE", [">"])]
    assert overlapping(["rd.inbound.>"], streams) == [("EVERYTHING_RD", ["rd.*.sms"]), ("WIDE", [">"])]
    assert overlapping(["rd.events.>"], [("ORDERS", ["orders.>"]), ("SHORT", ["rd.events"])]) == []
