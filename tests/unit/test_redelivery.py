"""The redelivery bound of work-queue consumers (``connectors.sdk.deadletter.Redelivery``)."""

from __future__ import annotations

from nats.js.api import AckPolicy, ConsumerConfig

from connectors.sdk.deadletter import Redelivery


def test_pauses_grow_then_repeat_the_last_and_the_bound_is_inclusive() -> None:
    bound = Redelivery(max_deliver=4, retry_delays=(1.0, 5.0), ack_wait=20.0)
    assert [bound.delay_after(n) for n in (1, 2, 3)] == [1.0, 5.0, 5.0]
    assert [bound.exhausted(n) for n in (1, 2, 3, 4, 5)] == [False, False, False, True, True]
    assert Redelivery(retry_delays=()).delay_after(3) == 0.0


def test_the_consumer_gets_the_bound_and_no_backoff_list() -> None:
    # A configured backoff would override the nak delays from the second redelivery on.
    old = ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT, max_deliver=-1, backoff=[1.0, 2.0])
    new = Redelivery(max_deliver=4, ack_wait=20.0).apply(old)
    assert (new.max_deliver, new.ack_wait, new.backoff) == (4, 20.0, None)
    assert new.durable_name == "d" and old.max_deliver == -1  # a copy; the rest kept


def test_defaults_span_minutes_not_a_hot_loop() -> None:
    bound = Redelivery()
    total = sum(bound.delay_after(n) for n in range(1, bound.max_deliver))
    assert bound.max_deliver == 6 and 5 * 60 <= total <= 10 * 60
