"""``DELETE /v1/customers/{id}/identities/{identity}`` is the first route with an address in its
path, and the API's log lines name the path: a retry answered from its Idempotency-Key record
(``api.idempotent_replay``), NATS not answering (``api.nats_unavailable``), an unexpected error
(``api.unhandled_error``), an erased customer's key (``api.customer_erased_refused``). Found by
a privacy review: each logged the phone number in clear. Now the address is masked there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from events.personal import KeyDestroyed
from services.api import customers as api_customers
from services.bus.embedded import EmbeddedNats
from tests.customers.helpers import Desk, running_desk

pytestmark = pytest.mark.integration

DIGITS = "5550107777"
NUMBER = f"phone:+1{DIGITS}"


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def _delete(desk: Desk, path: str, key: str) -> tuple[int, Any]:
    headers = {"Authorization": "Bearer test-operator-token", "Idempotency-Key": key}
    async with desk.system.http.delete(desk.system.api + path, json={}, headers=headers) as r:
        return r.status, await r.json()


def _in_clear(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if DIGITS[-6:] in repr(entry)]


async def test_the_address_in_the_path_is_masked_in_the_logs(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, log_lines: list[dict[str, Any]]
) -> None:
    await desk.write("sms", f"+1{DIGITS}", "hello")
    ann = await desk.customer_of(NUMBER)
    path = f"/v1/customers/{ann}/identities/{NUMBER}"
    real_unlink = api_customers.unlink

    for failure, status in ((nats.errors.TimeoutError(), 503), (RuntimeError("boom"), 500), (KeyDestroyed(ann), 410)):

        async def failing(*args: Any, failure: BaseException = failure, **kwargs: Any) -> Any:
            raise failure

        monkeypatch.setattr(api_customers, "unlink", failing)
        since = len(log_lines)
        answer = await _delete(desk, path, f"k-{status}")
        logs = log_lines[since:]
        assert answer[0] == status, (failure, answer)
        assert logs, failure  # it was logged
        assert _in_clear(logs) == [], (failure, _in_clear(logs))

    monkeypatch.setattr(api_customers, "unlink", real_unlink)
    since = len(log_lines)
    first = await _delete(desk, path, "k-done")
    again = await _delete(desk, path, "k-done")  # answered from its record
    logs = log_lines[since:]
    assert first == again and first[0] == 200 and first[1]["unlinked"] is True, (first, again)
    assert any(entry["event"] == "api.idempotent_replay" for entry in logs), logs
    # The conversation intake opened on the number is resolved, and counted (the replay does not run it again).
    unlinked = [e for e in logs if e["event"] == "customers.unlinked"]
    assert [(e["conversations_resolved"], e["replies_withdrawn"]) for e in unlinked] == [(1, 0)], logs
    assert _in_clear(logs) == [], _in_clear(logs)
