"""The live stream's ``message_received`` frames link attachments the way the timeline does: a
short-lived signed ``/v1/attachments/<token>`` made for the stream's caller, never the stored
location (``nats-object://…``, a Graph URL) a browser cannot open."""

from __future__ import annotations

from typing import Any

import pytest

from events.model import Attachment

from .helpers import API_TOKEN, AgentSystem, eventually, holds, stored_attachment
from .test_stream_resume import Frame, customer_writes, following
from .test_workspace_api import accepted_by_ava, call_with, open_with, w  # noqa: F401 - w: the fixture

pytestmark = pytest.mark.integration

PDF = b"%PDF-1.4 the invoice\n"
INVOICE_TEXT = "here is the invoice"


async def stored_pdf(s: AgentSystem) -> Attachment:
    return await stored_attachment(s.store, PDF, name="a.pdf", content_type="application/pdf")


async def test_stream_attachments_are_signed_links_for_the_streams_caller(w: AgentSystem) -> None:  # noqa: F811
    ava, _ = await w.issue_token("ava")
    customer, cid, _ = await open_with(w)
    await accepted_by_ava(w, cid, ava)
    graph = Attachment(url="https://graph.facebook.com/v21.0/MEDIA9", content_type="image/jpeg", name="photo")
    nowhere = Attachment(url=None, name="sticker")
    async with following(w, ava) as frames:
        message_id = await customer_writes(w, customer, cid, INVOICE_TEXT, (await stored_pdf(w), graph, nowhere))

        def received() -> Frame | None:
            return next(
                (f for f in frames if f.kind == "message_received" and f.data["message_id"] == message_id), None
            )

        frame = await eventually(holds(received))
    shown: list[dict[str, Any]] = frame.data["attachments"]
    assert [a["name"] for a in shown] == ["a.pdf", "photo", "sticker"]
    assert shown[0]["url"].startswith("/v1/attachments/") and shown[1]["url"].startswith("/v1/attachments/")
    assert shown[2]["url"] is None  # nothing to fetch: no link
    raw = str(frame.data)
    assert "nats-object://" not in raw and "graph.facebook.com" not in raw

    # The link opens for Ava, the stream's caller, and for nobody else.
    bearer = {"Authorization": f"Bearer {ava}"}
    status, headers, body = await call_with(w, "GET", shown[0]["url"], bearer)
    assert status == 200 and body == PDF and headers["Content-Type"] == "application/pdf"
    status, _, body = await call_with(w, "GET", shown[0]["url"], {"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 403 and b"someone else" in body


async def test_an_operator_following_an_agent_gets_links_of_her_own(w: AgentSystem) -> None:  # noqa: F811
    ava, _ = await w.issue_token("ava")
    customer, cid, _ = await open_with(w)
    await accepted_by_ava(w, cid, ava)
    async with following(w, API_TOKEN, agent="ava") as frames:
        message_id = await customer_writes(w, customer, cid, INVOICE_TEXT, (await stored_pdf(w),))

        def received() -> Frame | None:
            return next(
                (f for f in frames if f.kind == "message_received" and f.data["message_id"] == message_id), None
            )

        frame = await eventually(holds(received))
    [shown] = frame.data["attachments"]
    status, _, body = await call_with(w, "GET", shown["url"], {"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 200 and body == PDF
    status, _, _ = await call_with(w, "GET", shown["url"], {"Authorization": f"Bearer {ava}"})
    assert status == 403
