"""The cross-channel rule: some work takes the agent whole.

While an agent holds work on an *exclusive* channel (``RouterPolicy.exclusive_channels``,
default ``("voice",)``: a call, offered or assigned, or one in wrap-up), she gets no new work
on any channel. And she gets new work on an exclusive channel only while she holds at most
``exclusive_max_other_load`` conversations on the other channels (default ``None``: any
number; her chats wait while she talks, as in Amazon Connect's default cross-channel
behaviour). A limit of 0 keeps calls for agents with nothing else, at the risk that calls wait
while every agent has chats; the wait limit of the voice connector (callback, voicemail)
bounds that wait.

Pure: the agent's load, the work given this round and running wrap-ups are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from router.policy import RouterPolicy


def blocks(
    policy: RouterPolicy,
    channel: str,
    load: Mapping[str, int],
    used: Callable[[str], int],
    used_total: int,
    wrapping: Callable[[str], int],
) -> bool:
    """Whether the cross-channel rule keeps work on ``channel`` from this agent now.

    ``load``: her conversations (and pending offers) per channel; ``used(channel)``: what this
    round already gave her there, ``used_total`` on every channel; ``wrapping(channel)``: her
    slots in wrap-up there."""
    exclusive = policy.exclusive_channels
    if not exclusive:
        return False
    for name in exclusive:
        if load.get(name, 0) + used(name) + wrapping(name) > 0:
            return True
    limit = policy.exclusive_max_other_load
    if channel in exclusive and limit is not None:
        # Exclusive channels hold nothing here (checked above): all she was given is elsewhere.
        others = sum(n for name, n in load.items() if name not in exclusive) + used_total
        return others > limit
    return False
