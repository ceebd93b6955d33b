"""Opening one SQLite timelines file from several places at once, as ``relaydesk up`` does
(the projector writes, the API reads): nobody may fail with "database is locked"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.timelines.sqlite import SqliteTimelineStore


async def test_projector_and_readers_opening_a_fresh_file_together_all_succeed(tmp_path: Path) -> None:
    # Before the fix about one start in ten lost this race; forty rounds make a regression
    # near certain to show.
    for round_ in range(40):
        path = tmp_path / f"round-{round_}" / "timelines.db"
        path.parent.mkdir()
        stores = await asyncio.gather(
            SqliteTimelineStore.open(path),
            SqliteTimelineStore.open(path, readonly=True),
            SqliteTimelineStore.open(path, readonly=True),
        )
        try:
            for store in stores:
                assert await store.checkpoint() == 0
        finally:
            for store in stores:
                await store.close()
