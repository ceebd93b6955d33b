"""Issue 12: ``PUT`` and ``PATCH /v1/customers/{id}`` keep what the body does not name (a
``{"crm_id"}`` PUT used to reset a platinum customer to standard), over a real nats-server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events import subjects
from events.model import CustomerProfileUpdated
from services.bus.embedded import EmbeddedNats
from tests.customers.helpers import Desk, running_desk

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer test-operator-token"}
PLATINUM: dict[str, Any] = {
    "tier": "platinum",
    "flags": ["media_attention"],
    "preferred_language": "es",
    "crm_id": "CRM-1",
    "name": "Ana Ruiz",
}


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def send(desk: Desk, method: str, path: str, body: Any) -> tuple[int, Any]:
    async with desk.system.http.request(method, desk.system.api + path, json=body, headers=HEADERS) as r:
        return r.status, await r.json()


async def new_customer(desk: Desk, phone: str) -> str:
    await desk.write("sms", phone, "hello")
    return await desk.customer_of(f"sms:{phone}")


async def profile_events(desk: Desk, customer_id: str) -> list[CustomerProfileUpdated]:
    stored = await desk.store.read(subjects.customer_scope(customer_id))
    return [e.event for e in stored if isinstance(e.event, CustomerProfileUpdated)]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_crm_id_update_keeps_a_platinum_customer_platinum(desk: Desk, method: str) -> None:
    cid = await new_customer(desk, "+15550001201")
    status, body = await send(desk, "PUT", f"/v1/customers/{cid}", PLATINUM)
    assert status == 200, body

    status, body = await send(desk, method, f"/v1/customers/{cid}", {"crm_id": "CRM-2"})
    assert (status, body) == (200, {"customer_id": cid, **PLATINUM, "crm_id": "CRM-2"})
    status, body = await desk.system.get(f"/v1/customers/{cid}")
    assert status == 200, body
    assert (body["tier"], body["flags"], body["preferred_language"], body["crm_id"]) == (
        "platinum",
        ["media_attention"],
        "es",
        "CRM-2",
    )
    # The log's profile (what the router and the timelines fold) is whole, the name included.
    last = (await profile_events(desk, cid))[-1]
    assert (last.tier, last.flags, last.name, last.actor) == ("platinum", ("media_attention",), "Ana Ruiz", "operator")


async def test_null_clears_a_field_and_an_unchanged_profile_appends_nothing(desk: Desk) -> None:
    cid = await new_customer(desk, "+15550001202")
    assert (await send(desk, "PATCH", f"/v1/customers/{cid}", PLATINUM))[0] == 200
    status, body = await send(desk, "PATCH", f"/v1/customers/{cid}", {"crm_id": None, "name": None})
    assert (status, body) == (200, {"customer_id": cid, **PLATINUM, "crm_id": None, "name": None})
    before = len(await profile_events(desk, cid))
    status, body = await send(desk, "PUT", f"/v1/customers/{cid}", {"tier": "platinum"})
    assert status == 200 and body["preferred_language"] == "es"
    assert len(await profile_events(desk, cid)) == before


async def test_any_subset_of_fields_changes_those_fields_only(desk: Desk) -> None:
    """A small model check: random subsets, by PUT or PATCH, against a dict merged by hand."""
    cid = await new_customer(desk, "+15550001203")
    choices: dict[str, list[Any]] = {
        "tier": ["standard", "gold", "platinum"],
        "flags": [[], ["regulatory_risk"], ["media_attention", "executive_escalation"]],
        "preferred_language": [None, "en", "de"],
        "crm_id": [None, "CRM-7", "CRM-8"],
        "name": [None, "Bo", "Cy"],
    }
    expected: dict[str, Any] = {"tier": "standard", "flags": [], "preferred_language": None, "crm_id": None}
    rng = random.Random(12)
    for step in range(16):
        fields = rng.sample(sorted(choices), rng.randint(0 if step else 1, len(choices)))
        change = {field: rng.choice(choices[field]) for field in fields}
        method = rng.choice(["PUT", "PATCH"])
        status, body = await send(desk, method, f"/v1/customers/{cid}", change)
        assert status == 200, (method, change, body)
        expected.update(change)
        assert body == {"customer_id": cid, "name": None, **expected}, (method, change)
        status, seen = await desk.system.get(f"/v1/customers/{cid}")
        assert {k: seen[k] for k in ("tier", "flags", "preferred_language", "crm_id")} == {
            k: expected[k] for k in ("tier", "flags", "preferred_language", "crm_id")
        }


async def test_bad_profile_changes_are_refused_and_change_nothing(desk: Desk) -> None:
    cid = await new_customer(desk, "+15550001204")
    assert (await send(desk, "PUT", f"/v1/customers/{cid}", PLATINUM))[0] == 200
    status, body = await send(desk, "PATCH", f"/v1/customers/{cid}", {"crm": "CRM-9"})
    assert status == 400 and "crm" in body["error"], body
    status, body = await send(desk, "PATCH", f"/v1/customers/{cid}", {"preferred_language": "esp"})
    assert status == 400 and "unknown language 'esp' (did you mean 'es'?)" in body["error"], body
    status, body = await send(desk, "PATCH", f"/v1/customers/{cid}", {"tier": None})
    assert status == 400, body
    status, body = await send(desk, "PATCH", f"/v1/customers/{cid}", {"tier": "diamond"})
    assert status == 400 and body["tiers"] == ["gold", "platinum", "standard"], body
    status, body = await send(desk, "PATCH", "/v1/customers/cu_nobody", {"tier": "gold"})
    assert (status, body) == (404, {"error": "no customer cu_nobody"})
    status, body = await desk.system.get(f"/v1/customers/{cid}")
    assert (body["tier"], body["crm_id"]) == ("platinum", "CRM-1")
