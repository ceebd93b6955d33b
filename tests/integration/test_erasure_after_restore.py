"""NATS restored from a backup taken before an erasure brings the customer back, keys included
(the erasure's marks, its CustomerErased and the destroyed keys are all in the restored store):
an audit found nothing noticed. The erasure register in the timelines store (which is not
restored) says so: the projector reports the erasure undone (log line, gauge), `relaydesk
customers erase-again` erases the customer again, and then nothing of theirs is readable, in
the API, on the log, in any file of the NATS store or of the SQLite timelines."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from prometheus_client import REGISTRY

from events.personal import ERASED
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.customers.command import run_erase_again
from services.rebuild import rebuild_timelines
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import System, eventually, running_system, system_config
from tests.integration.test_erasure import files_holding

pytestmark = pytest.mark.integration

PHONE, BOB = "+15557771234", "+15553334444"
TEXT = "NUMBAT-RESTORED-ONE my account number is 99812"
BOB_TEXT = "WOMBAT-BOB-STAYS every word"
SECRETS = [PHONE.removeprefix("+"), "NUMBAT-RESTORED-ONE", "99812"]


def undone_gauge() -> float | None:
    return REGISTRY.get_sample_value("relaydesk_erasures_undone")


def gauge_is(value: float) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return undone_gauge() == value

    return probe


async def _timeline(system: System, customer_id: str) -> list[dict[str, Any]]:
    status, body = await system.get(f"/v1/customers/{customer_id}/timeline", limit="1000")
    assert status == 200, body
    return body["entries"]  # type: ignore[no-any-return]


async def _readable(system: System, customer_id: str) -> bool:
    return any(e.get("text") == TEXT for e in await _timeline(system, customer_id))


async def _redacted(system: System, customer_id: str) -> bool:
    entries = await _timeline(system, customer_id)
    texts = [e.get("text") for e in entries if e.get("text")]
    return any(e["kind"] == "customer_erased" for e in entries) and all(t == ERASED for t in texts)


def _restart_from(server: EmbeddedNats, backup: Path | None, keep: Path | None = None) -> None:
    """Stop the server; ``keep``: copy its store there (a file-level backup of a stopped
    server); ``backup``: put that copy in place of its store (a restore). Then start it."""
    server.stop()
    if keep is not None:
        shutil.copytree(server.store_dir, keep)
    if backup is not None:
        shutil.rmtree(server.store_dir)
        shutil.copytree(backup, server.store_dir)
    server.start()


async def test_an_erasure_a_restore_undid_is_reported_and_applied_again(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, fake_twilio[1])
    backup = tmp_path / "backup" / "js"

    # She and Bob write; their messages reach the timelines.
    async with running_system(config, clean_nats) as system:
        assert await system.send_sms("SM" + "1" * 32, PHONE, TEXT) == 200
        assert await system.send_sms("SM" + "2" * 32, BOB, BOB_TEXT) == 200
        customer_id = await eventually(lambda: system.customer(PHONE))
        bob_id = await eventually(lambda: system.customer(BOB))
        await eventually(lambda: _readable(system, customer_id), timeout=30)
    _restart_from(clean_nats, None, keep=backup)  # the backup, taken before the erasure

    # She is erased (DELETE /v1/customers/{id}); the projector folds it into the register.
    async with running_system(config, clean_nats) as system:
        headers = {"Authorization": "Bearer test-operator-token"}
        url = f"{system.api}/v1/customers/{customer_id}"
        async with system.http.delete(url, json={"reason": "DSR-2041"}, headers=headers) as r:
            assert r.status == 200, await r.text()
        await eventually(lambda: _redacted(system, customer_id), timeout=30)

    # NATS restored from the backup: she is back, keys included.
    _restart_from(clean_nats, backup)
    with structlog.testing.capture_logs() as logs:
        async with running_system(config, clean_nats) as system:

            async def reported() -> bool:
                return any(e["event"] == "projector.erasure_undone" for e in logs) and await gauge_is(1)()

            await eventually(reported, timeout=60)
            undone = [e for e in logs if e["event"] == "projector.erasure_undone"]
            assert [e["customer_id"] for e in undone] == [customer_id] and undone[0]["log_level"] == "error"
            assert set(undone[0]) <= {"event", "log_level", "customer_id", "erased_seq", "action"}  # ids only
            assert any(e["event"] == "projector.store_of_another_log" for e in logs)  # rebuilt, register kept
            await eventually(lambda: _readable(system, customer_id), timeout=30)  # what the audit found

            # `relaydesk rebuild timelines` beside it keeps the register too (the dry run reads it after).
            nc = await nats.connect(clean_nats.url)
            try:
                await rebuild_timelines(
                    event_store(nc, config), str(tmp_path / "data" / "timelines.db"), progress=False
                )
            finally:
                await nc.close()

            capsys.readouterr()
            assert await run_erase_again(config, dry_run=True) == 0
            listed = capsys.readouterr().out
            assert customer_id in listed and "DSR-2041" in listed and bob_id not in listed
            assert undone_gauge() == 1  # a dry run changes nothing

            assert await run_erase_again(config) == 0
            said = capsys.readouterr().out
            assert f"[1/1] {customer_id}: erased again" in said, said
            await eventually(lambda: _redacted(system, customer_id), timeout=30)
            await eventually(gauge_is(0), timeout=30)

            # Run again: nothing left to do.
            assert await run_erase_again(config) == 0
            assert "nothing to erase again" in capsys.readouterr().out

            status, body = await system.get(f"/v1/customers/{customer_id}")
            assert status == 200 and body["erased"], body
            assert (await system.get("/v1/customers", identity=f"sms:{PHONE}"))[0] == 404
            assert any(e.get("text") == BOB_TEXT for e in await _timeline(system, bob_id))

    # On the log, opened as every reader opens it: her message reads [erased].
    nc = await nats.connect(clean_nats.url)
    try:
        her = await event_store(nc, config).read_customer(customer_id)
        texts = [t for s in her if isinstance(t := getattr(s.event, "text", None), str) and t]
        assert texts and all(t == ERASED for t in texts), texts
    finally:
        await nc.close()

    # No file of the NATS store or of the timelines holds her number or words; Bob's are there.
    assert files_holding(clean_nats.store_dir, SECRETS) == {}
    db_dir = tmp_path / "data"
    assert files_holding(db_dir, SECRETS) == {}
    assert files_holding(db_dir, [BOB_TEXT.split()[0]]), "the scan finds what is there"
