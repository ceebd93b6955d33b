"""``relaydesk setup`` removes what ``rd_state`` kept for good before its per-reply and
per-notice keys went by themselves (``events.kv_expiry``, 2026-12-07): the marker of every
Slack reference removed (two per Slack message ever posted) and every sent mail's entry
(``email.sent.*``, one per email reply) older than ``SENT_KEPT``. New ones lapse on their
own; these stay until removed, and a deployment that ran for months holds millions.

Run by the tool role (a filtered purge of the bucket's stream per key, which no service's role
may do); safe to run again: only markers and entries past their time are removed, never a
live reference or a recent entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js import JetStreamContext

from connectors.email.bounces import KEY_PREFIX as SENT_PREFIX
from connectors.email.bounces import SENT_KEPT
from events import subjects
from events.stream_scan import KV_GONE, scan
from services.delivery.slack_refs import PREFIX as SLACK_PREFIX

STREAM = f"KV_{subjects.STATE_BUCKET}"
KEYS = f"$KV.{subjects.STATE_BUCKET}."
AT_ONCE = 256  # purges in flight together (one request each)


@dataclass
class Swept:
    markers: int = 0  # removed Slack references' markers
    entries: int = 0  # sent mails' entries past SENT_KEPT (and their erasures' markers)

    def __str__(self) -> str:
        return f"rd_state: {self.markers} removed Slack references and {self.entries} sent-mail entries cleared"


async def sweep_state(js: JetStreamContext, now: datetime) -> Swept:
    """Remove the markers and old entries (see the module docstring); how many of each."""
    swept = Swept()
    batch: list[str] = []

    async def purge() -> None:
        await asyncio.gather(*(js.purge_stream(STREAM, subject=subject) for subject in batch))
        batch.clear()

    async for msg in scan(js, STREAM, f"{KEYS}{SLACK_PREFIX}.>", last_per_subject=True):
        headers = msg.headers or {}
        if headers.get("KV-Operation") in KV_GONE and "Nats-TTL" not in headers:
            batch.append(msg.subject)
            swept.markers += 1
            if len(batch) >= AT_ONCE:
                await purge()
    await purge()
    cutoff = now - timedelta(seconds=SENT_KEPT)
    async for msg in scan(js, STREAM, f"{KEYS}{SENT_PREFIX}>", last_per_subject=True):
        headers = msg.headers or {}
        gone = headers.get("KV-Operation") in KV_GONE  # an erasure's purge: nothing to look up
        if "Nats-TTL" not in headers and (gone or msg.metadata.timestamp < cutoff):
            batch.append(msg.subject)
            swept.entries += 1
            if len(batch) >= AT_ONCE:
                await purge()
    await purge()
    return swept
