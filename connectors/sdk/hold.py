"""How long a connector process may still act on the outbound command it holds.

NATS gives a command to one process of the channel for the consumer's ack wait, renewed by each
``in_progress``. A process that paused past it unseen (SIGSTOP, a VM pause, starvation) may have
lost the command to another process, which sends it: this one must not send it too. So every
hold counts from when it was last known renewed (or handed over: ``events.pull.asked_at``), and
is taken as lapsed a margin before the ack wait runs out.
"""

from __future__ import annotations

import time

from nats.aio.msg import Msg

from events.skips import skipping


class HoldLapsed(Exception):
    """This process may no longer hold the command: its ack wait may have run out unseen (the
    process paused, stopped with SIGSTOP, starved), so NATS may have handed it to another
    process of the channel, which sends it. Sending it here too would send it twice."""


def hold_margin(ack_wait: float) -> float:
    """How long before the ack wait runs out a hold counts as lapsed: a fifth, at most 5 s
    (round trips, scheduling)."""
    return min(ack_wait * 0.2, 5.0)


class Hold:
    """The hold of the command being handled (``since``: when it was last known renewed,
    ``time.monotonic``) and of the batch's commands waiting their turn."""

    def __init__(self, ack_wait: float = 30.0) -> None:
        self.ack_wait = ack_wait  # the consumer's (set when it is made)
        self.since = time.monotonic()

    def lapsed(self, since: float | None = None) -> bool:
        """Whether a hold renewed at ``since`` (default: the current command's) may have lapsed."""
        return time.monotonic() - (self.since if since is None else since) >= self.ack_wait - hold_margin(self.ack_wait)

    def ends(self) -> float:
        """When the current command's hold counts as lapsed (``time.monotonic``)."""
        return self.since + self.ack_wait - hold_margin(self.ack_wait)

    async def renew(self, msg: Msg) -> None:
        """Ask NATS for a fresh ack wait on ``msg``, the command being handled. ``since`` moves
        only once the server took the request: a renewal that failed leaves the hold to lapse
        when it would have (``lapsed`` then says so)."""
        renewing = time.monotonic()
        with skipping("outbound.in_progress", nats_subject=msg.subject):
            await msg.in_progress()
            self.since = renewing

    async def keep(self, msgs: list[Msg], held: list[float], start: int) -> None:
        """Renew the hold of the batch's commands still waiting their turn (``held``: when
        each was last known held), so that slow deliveries ahead of them in the batch do not
        let them lapse; one that may have lapsed already is left as it is (the worker's
        ``_deliver``). Only holds older than a quarter of the ack wait are renewed: not every
        waiting command's at every send (a batch of 10 cost up to 45 renewals)."""
        for j in range(start, len(msgs)):
            if self.lapsed(held[j]):
                continue
            renewing = time.monotonic()
            if renewing - held[j] < self.ack_wait / 4:
                continue  # held recently enough: no publish per waiting command per send
            with skipping("outbound.in_progress", nats_subject=msgs[j].subject):
                await msgs[j].in_progress()
                held[j] = renewing
