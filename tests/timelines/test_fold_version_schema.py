"""What the timelines store holds is pinned to ``FOLD_VERSION``: a table or column added
without a thought about stores already built fails here. An existing store gets the new table
or column at open, empty or at its default; only a store folded again from the log fills it
with what the events already folded say. The erasure register (table ``erasures``) came in at
fold version 8, so every store upgraded from the release kept an empty register: erasures
folded before the upgrade were not in it, and a restore of NATS from an older backup brought
those customers back unreported (``tests/timelines/test_projector.py``,
``test_an_upgraded_store_registers_the_erasures_it_folded_before``).

When this fails: if the fold fills the new table or column from events, bump ``FOLD_VERSION``
(the projector refolds an older store into a shadow copy at the upgrade, README *Upgrading*);
if it holds nothing older events give (or a migration at open fills it), keep the version and
say why beside the new fingerprint. Then record the fingerprint below."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from services.timelines.fold import FOLD_VERSION
from services.timelines.sqlite import SqliteTimelineStore

# FOLD_VERSION -> fingerprint of the SQLite tables and their columns it writes.
SCHEMA_OF_VERSION = {
    8: "161091f1e84744f6",  # the release of 9a243af
    9: "7174987dca0575af",  # + erasures: filled by the fold, so a store of 8 is refolded
}


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The store's tables (the search index's FTS tables left out: derived at open, not folded)
    with their columns and types, and a digest of them."""
    with sqlite3.connect(path) as db:
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not name.startswith("customers_trigram")
        ]
        shape = []
        for table in tables:
            columns = ", ".join(f"{c[1]} {c[2]}" for c in db.execute(f'PRAGMA table_info("{table}")'))
            shape.append(f"{table}({columns})")
    return hashlib.sha256("\n".join(shape).encode()).hexdigest()[:16], shape


async def test_the_store_schema_is_the_one_its_fold_version_names(tmp_path: Path) -> None:
    store = await SqliteTimelineStore.open(tmp_path / "timelines.db")
    await store.close()
    digest, shape = fingerprint(tmp_path / "timelines.db")
    assert SCHEMA_OF_VERSION.get(FOLD_VERSION) == digest, (
        f"the timelines schema is {digest} at FOLD_VERSION {FOLD_VERSION} (see this module's docstring):\n"
        + "\n".join(shape)
    )
