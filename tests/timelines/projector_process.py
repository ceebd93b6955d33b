"""A projector in a process of its own, for kill -9 tests:
``python -m tests.timelines.projector_process NATS_URL TARGET [SCHEMA]``."""

from __future__ import annotations

import asyncio
import sys

import nats

from events.store import EventStore
from services import logs
from services.projector import Projector
from services.timelines import open_store


async def main(url: str, target: str, schema: str | None) -> None:
    nc = await nats.connect(url)
    timelines = await open_store(target, schema=schema)
    print("ready", flush=True)
    await Projector(EventStore(nc, nc.jetstream()), timelines, batch_size=40, idle=0.001).run(asyncio.Event())


if __name__ == "__main__":
    logs.configure(level="warning", fmt="console")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
