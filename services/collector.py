"""The garbage collector as a long-running service with a large folded state wants it.

Once caught up, what a service folded (a million objects at a long log) is frozen out of the
collector's sight (``gc.freeze``): a full collection no longer walks it in the middle of a
decision. And the youngest generation is collected every ``YOUNG_THRESHOLD`` allocations rather
than CPython's 700: a routing cycle allocates thousands of short-lived objects that reference
counting frees, and a collection every 700 of them cost the router 16-24 µs of its ~300 µs per
routed conversation (``relaydesk bench decide``: "of which the garbage collector"); at 10,000,
~10 µs. What is left to the collector is cyclic garbage, found a little later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_in() -> tuple[int, int, int]:
    """Freeze what is held now and collect the youngest generation less often; returns the
    thresholds before, for ``let_go``."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(YOUNG_THRESHOLD, before[0]), before[1], before[2])
    return before


def let_go(before: tuple[int, int, int]) -> None:
    """Undo ``settle_in``: what was frozen can be collected again, at the thresholds before."""
    gc.unfreeze()
    gc.set_threshold(*before)
