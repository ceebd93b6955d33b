"""Files agents sent a customer go with the customer (issue 13, erasure): an agent uploads a
file and replies with it over SMS (the fake Twilio fetches it by its signed link); erasing the
customer removes the object, the link answers 404 and the erasure report counts the file. An
upload no reply named is nobody's: erasure leaves it, and the sweep of unused uploads erases it
once it is old enough. Every service runs over a real nats-server; Twilio is a local fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import ObjectNotFoundError

from events.streams import ATTACHMENTS_BUCKET
from services.api.uploads import sweep_unused_uploads
from services.bus.embedded import EmbeddedNats
from tests.integration.fake_twilio import FakeTwilio, fake_twilio_server, with_fake_twilio
from tests.integration.system import API_TOKEN, System, accept_if_offered, eventually, running_system, system_config

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    async with fake_twilio_server() as found:
        yield found


async def upload(system: System, data: bytes, name: str) -> str:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "image/png"}
    async with system.http.post(f"{system.api}/v1/uploads?name={name}", data=data, headers=headers) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["id"])


async def fetch(system: System, url: str) -> tuple[int, bytes]:
    async with system.http.get(url) as r:  # no bearer: the signed link is the permission
        return r.status, await r.read()


async def reply_with_file(system: System, fake: FakeTwilio, sid: str, phone: str, file_id: str) -> tuple[str, str, str]:
    """``phone`` writes in, an agent replies with ``file_id``: (customer id, conversation id,
    the MediaUrl Twilio got)."""
    assert await system.send_sms(sid, phone, "can you send the receipt?") == 200
    customer_id = await eventually(lambda: system.customer(phone))
    conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
    status, body = await system.post(
        f"/v1/conversations/{conv['id']}/reply", {"text": "Here it is", "attachments": [file_id]}
    )
    assert status == 202, body

    async def sent() -> str | None:
        return next((m["MediaUrl"] for m in fake.messages if m.get("To") == phone and m.get("MediaUrl")), None)

    return customer_id, conv["id"], await eventually(sent)


async def erase(system: System, customer_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    url = f"{system.api}/v1/customers/{customer_id}?reason=DSR-13"
    async with system.http.delete(url, headers=headers) as r:
        body = await r.json()
        assert r.status == 200, body
        return body  # type: ignore[no-any-return]


async def stored(nats_url: str, *names: str) -> set[str]:
    """Which of ``names`` the attachment store still holds."""
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().object_store(ATTACHMENTS_BUCKET)
        held = set()
        for name in names:
            try:
                await store.get_info(name)
                held.add(name)
            except ObjectNotFoundError:
                pass
        return held
    finally:
        await nc.drain()


async def test_erasing_a_customer_removes_the_files_agents_sent_them(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:
        sent = await upload(system, PNG, "receipt.png")
        draft = await upload(system, PNG + b"draft", "draft.png")  # another agent's, never sent
        customer_id, _, media_url = await reply_with_file(system, fake, "SM" + "7" * 32, "+15551230013", sent)
        before = await fetch(system, media_url)

        report = await erase(system, customer_id)
        after = await fetch(system, media_url)
        again = await erase(system, customer_id)
        left = await stored(clean_nats.url, sent, draft)
    assert before == (200, PNG)
    assert report["reply_files"] == 1
    assert after[0] in (404, 410)  # the provider's (or anyone's) link now finds nothing
    assert left == {draft}  # the unsent upload is not the customer's: it stays
    assert again["already_erased"] and again["reply_files"] == 0


async def test_uploads_no_reply_named_are_swept_once_old_enough(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:
        sent = await upload(system, PNG, "receipt.png")
        draft = await upload(system, PNG + b"draft", "draft.png")
        _, conversation_id, media_url = await reply_with_file(system, fake, "SM" + "8" * 32, "+15551230014", sent)
        nc = await nats.connect(clean_nats.url)
        try:
            js = nc.jetstream()
            fresh = await sweep_unused_uploads(js)  # the default: a day to use an upload
            stale = await sweep_unused_uploads(js, older_than_s=0)
            left = await stored(clean_nats.url, sent, draft)
        finally:
            await nc.drain()
        still_sent = await fetch(system, media_url)
        status, refused = await system.post(
            f"/v1/conversations/{conversation_id}/reply", {"text": "and the draft", "attachments": [draft]}
        )
    assert (fresh, stale) == (0, 1)
    assert left == {sent}  # the file a reply named stays: it is the customer's now
    assert still_sent == (200, PNG)
    assert status == 400 and "no upload" in refused["error"]
