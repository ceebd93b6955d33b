"""What becomes of an outbound command the worker neither sent nor reported an outcome for.

Three ends, each logged on the worker's bound logger (``outbound.*`` event names): a command
whose hold may have lapsed is left alone until NATS hands it on after its ack wait
(``hold_lapsed``); one interrupted by a stop between tries goes back to the queue at once
(``hand_back``); one that could not be opened or whose outcome could not be reported is handed
back after the next pause, or parked as a dead letter at its last allowed delivery
(``retry_or_park``). The outbound worker itself: ``connectors.sdk.outbound``.
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from events.parking import ParkingLot
from events.skips import count_skip, skipping

from .deadletter import Redelivery, dead_letter


def hold_lapsed(msg: Msg, rlog: Any) -> None:
    """Neither sent, acknowledged nor handed back (a nak could hand it to a third process
    while another sends it): NATS gives it to a process of the channel once its ack wait
    has run out, if it has not already."""
    count_skip("outbound.hold_lapsed")
    rlog.warning(
        "outbound.hold_lapsed",
        stream_seq=msg.metadata.sequence.stream,
        delivery=msg.metadata.num_delivered,
        skipped="sending it here: its ack wait may have run out, so another process may send it",
    )


async def hand_back(msg: Msg, rlog: Any) -> None:
    """Stopping between two tries: the command goes back to the queue now (the next process
    of the channel tries it), neither sent nor failed here."""
    rlog.info(
        "outbound.handed_back",
        stream_seq=msg.metadata.sequence.stream,
        delivery=msg.metadata.num_delivered,
        reason="stopping while the provider was being retried",
    )
    with skipping("outbound.nak_on_stop", nats_subject=msg.subject):
        await msg.nak()


async def retry_or_park(
    msg: Msg, rlog: Any, error: str, *, redelivery: Redelivery, parking: ParkingLot, reader: str
) -> None:
    """Hand ``msg`` back after the next pause, or, at its last allowed delivery, terminate
    it and park it as a dead letter with ``error``: bounded, never a hot loop."""
    delivered = msg.metadata.num_delivered or 1
    try:
        if redelivery.exhausted(delivered):
            await dead_letter(parking, msg, reader=reader, error=error)
        else:
            await msg.nak(delay=redelivery.delay_after(delivered))
    except Exception as settle_err:  # NATS away: the server redelivers after ack_wait
        rlog.warning(
            "outbound.settle_failed",
            error=type(settle_err).__name__,
            delivery=delivered,
            stream_seq=msg.metadata.sequence.stream,
            nats_subject=msg.subject,
        )
        count_skip("outbound.settle")
