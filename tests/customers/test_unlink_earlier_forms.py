"""An address whose ``rd_identity`` mapping is still under an earlier form of it (an email's local
part in NFD, as earlier versions wrote it: ``services.identity.addresses.earlier_forms``) is unlinked for
good. Found by a review of unlinking: only the identity's own key was removed, so the answer
said "unlinked" and the next message from the address found the earlier form's key, moved it
back (``IdentityDirectory._adopt``) and landed on the customer it was taken from."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from events.model import IdentityLinked
from events.store import Append, EventStore
from services.customers.unlink import unlink
from tests.customers.helpers import customer, customers_of

pytestmark = pytest.mark.integration


async def test_an_address_mapped_under_an_earlier_form_is_unlinked_for_good(
    nc: NATS, store: EventStore, uid: str
) -> None:
    customers = await customers_of(nc, store)
    owner = await customer(customers, f"chat:owner-{uid}")
    address = f"email:josé-{uid}@example.com"  # NFC: as it is written now
    older = unicodedata.normalize("NFD", address)  # as an earlier version wrote its key
    assert older != address
    linked = IdentityLinked(at=datetime.now(UTC), customer_id=owner, identity=address, actor="operator")
    await store.append(Append(linked))
    directory = customers.directory
    await directory.kv.put(await directory.key(older), owner.encode())

    answer = await unlink(customers, owner, address, "operator", reason="not theirs")
    assert answer["unlinked"] is True, answer
    assert await directory.lookup(address) is None  # the next message starts a new customer
    assert await directory.lookup(older) is None
