"""``relaydesk rebuild timelines`` with ``[retention] message_days``: a message written before
retention was turned on (sealed with the customer's own key, which no sweep erases) and older
than the period reads ``[expired]`` in the rebuilt store. Before, the rebuild's reader did not
know the setting and brought the words back until the projector's next daily sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from events.personal import EXPIRED, CustomerKeys, PersonalDataCipher
from events.store import Append, EventStore
from services.bus.embedded import EmbeddedNats
from services.rebuild import rebuild_command
from services.timelines import open_store
from tests.timelines.helpers import Script

OLD_TEXT = "my card ending 4242 was charged twice"


async def test_a_rebuild_keeps_old_bodies_expired(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    js = own_store.js
    before_retention = EventStore(own_store.nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))
    s = Script("cu_old", "cv_old", clock=datetime.now(UTC) - timedelta(days=40))
    for event in (s.created(), s.opened(), s.message(OLD_TEXT)):
        await before_retention.append(Append(event))
    target = str(tmp_path / "timelines.db")
    assert await rebuild_command(clean_nats.url, target, None, message_days=30) == 0
    store = await open_store(target, readonly=True)
    try:
        texts = [e.text for e in await store.timeline("cu_old") if e.kind == "message_in"]
    finally:
        await store.close()
    assert texts == [EXPIRED]
