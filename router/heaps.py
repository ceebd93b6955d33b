"""Heaps with lazy deletion: entries are never removed from the middle; a stale entry is
recognised by its owner (an enqueue number or version that no longer matches), skipped
by readers, popped when it reaches the top, and dropped when a heap is compacted."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T", bound=tuple[object, ...])


def in_order(heap: list[T]) -> Iterator[T]:
    """The heap's entries from the smallest up, without changing the heap.

    A best-first walk of the heap tree: visiting k entries costs O(k log k), whatever the
    heap's size, so a reader that stops early pays only for what it looked at.
    """
    if not heap:
        return
    size = len(heap)
    frontier: list[tuple[T, int]] = [(heap[0], 0)]
    while frontier:
        entry, at = heapq.heappop(frontier)
        yield entry
        child = 2 * at + 1
        if child < size:
            heapq.heappush(frontier, (heap[child], child))
            if child + 1 < size:
                heapq.heappush(frontier, (heap[child + 1], child + 1))


def prune(heap: list[T], valid: Callable[[T], bool]) -> None:
    """Pop stale entries off the top, so the top is live (or the heap empty)."""
    while heap and not valid(heap[0]):
        heapq.heappop(heap)


def compact(heap: list[T], valid: Callable[[T], bool], live: int) -> None:
    """Drop stale entries once they outnumber the live ones, keeping memory proportional to live work."""
    if len(heap) > 2 * live + 64:
        heap[:] = [entry for entry in heap if valid(entry)]
        heapq.heapify(heap)
    else:
        prune(heap, valid)


def in_true_order(heap: list[T], current: Callable[[T], T | None]) -> Iterator[T]:
    """The live entries of a heap whose entries may rank too well, in their true order.

    ``current(entry)`` gives the entry as it ranks now, or None when it is stale. It must
    never rank an entry better than the entry is stored (``current(e) >= e``): an entry that
    only got worse may then stay where it is, and this walk sets it aside until nothing
    stored ahead of it can come first. Visiting k entries costs O(k log k), as ``in_order``.
    """
    aside: list[T] = []
    for entry in in_order(heap):
        now = current(entry)
        if now is None:
            continue
        while aside and aside[0] <= entry:
            yield heapq.heappop(aside)
        if now == entry:
            yield entry
        else:
            heapq.heappush(aside, now)
    while aside:
        yield heapq.heappop(aside)
