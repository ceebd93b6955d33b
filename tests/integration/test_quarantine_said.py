"""What a quarantined message's log line says is what became of it. An operator dropped a
parked event (`relaydesk dlq drop`), and every later `relaydesk status` still warned that it
was "skipped; parked in rd_parked": it was not parked again (a dropped one never is)."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events.parking import ParkingLot, parked_key
from events.quarantine import PARKED, PARKED_BEFORE, Quarantine

pytestmark = pytest.mark.integration

SUBJECT = "rd.evt.c.cu1.cv1"


def said(log_lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(ln["reader"], ln["log_level"], ln["action"]) for ln in log_lines if ln["event"] == "log.quarantined"]


async def test_a_dropped_quarantined_message_met_again_is_said_to_be_parked_before(
    clean_nc: NATS, log_lines: list[dict[str, Any]]
) -> None:
    js = clean_nc.jetstream()
    seq = (await js.publish(SUBJECT, b"{not json")).seq
    await Quarantine(js).record("router", seq, SUBJECT, "cannot decode")
    assert said(log_lines) == [("router", "warning", PARKED)]
    assert await ParkingLot(js).drop(parked_key("RD_EVENTS", seq))

    log_lines.clear()
    later = Quarantine(js)  # another process: `relaydesk status`
    later.record_soon("status", seq, SUBJECT, "cannot decode")
    await later.settle()
    assert said(log_lines) == [("status", "info", PARKED_BEFORE)]
    assert await ParkingLot(js).get(parked_key("RD_EVENTS", seq)) is None  # not parked again
