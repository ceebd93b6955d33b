"""``SenderTurns``: a sender's messages held by one intake process are recorded lowest stream
sequence first, whichever asked first; one that fails or leaves early lets the next go."""

from __future__ import annotations

import asyncio

from services.intake.turns import SenderTurns, Ticket


async def _record(turns: SenderTurns, sender: str, ticket: Ticket, order: list[int | str], fail: bool = False) -> None:
    try:
        async with turns.turn(sender, ticket):
            await asyncio.sleep(0)
            if fail:
                raise RuntimeError("NATS away")
            order.append(ticket[0])
    except RuntimeError:
        order.append(-ticket[0])


async def test_the_lowest_sequence_held_goes_first_even_if_it_asks_last() -> None:
    turns, order = SenderTurns(), list[int | str]()
    tickets = {seq: turns.hold("sms:+1", seq, ("sms", f"m{seq}")) for seq in (4, 5, 6)}
    later = [asyncio.create_task(_record(turns, "sms:+1", tickets[seq], order)) for seq in (6, 4, 5)]
    await asyncio.sleep(0.01)
    assert order == [4, 5, 6]  # the held ones go in sequence order, not in the order they asked
    nine = turns.hold("sms:+1", 9, ("sms", "m9"))
    three = turns.hold("sms:+1", 3, ("sms", "m3"))  # a redelivered earlier one
    assert turns.held_before("sms:+1", nine, [("sms", "m3"), ("sms", "m7")]) == {("sms", "m3")}
    await asyncio.gather(_record(turns, "sms:+1", nine, order), _record(turns, "sms:+1", three, order), *later)
    assert order == [4, 5, 6, 3, 9]


async def test_a_failing_message_lets_its_sender_go_on_and_senders_do_not_wait_for_each_other() -> None:
    turns, order = SenderTurns(), list[int | str]()
    one, two = (turns.hold("a", seq, ("sms", f"a{seq}")) for seq in (1, 2))
    b = turns.hold("b", 0, ("sms", "b0"))
    await asyncio.gather(
        _record(turns, "a", two, order), _record(turns, "a", one, order, fail=True), _record(turns, "b", b, order)
    )
    assert order in ([0, -1, 2], [-1, 0, 2])
    assert turns.held_before("a", (99, 0), [("sms", "a1")]) == set()  # all gone


async def test_unsequenced_messages_go_after_the_sequenced_ones_and_a_message_held_twice_is_two() -> None:
    turns, order = SenderTurns(), list[int | str]()
    direct = turns.hold("a", None, ("sms", "direct"))
    first, again = turns.hold("a", 7, ("sms", "a7")), turns.hold("a", 7, ("sms", "a7"))  # redelivered, still held
    turns.leave("a", first)  # the first delivery gave up: the second is still held
    await asyncio.gather(_record(turns, "a", direct, order), _record(turns, "a", again, order))
    assert order == [7, direct[0]]
