"""``POST /v1/uploads`` with an ``Idempotency-Key``, over a real nats-server. Found by a retry
audit: the middleware read the body to fingerprint it, which consumed the stream the upload
handler reads, so every upload sent with a key was 400 "the file is empty" (and that 400 was
kept for the key), and one over the API's 256 KiB body limit was 413."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .helpers import API_TOKEN, AgentSystem

pytestmark = pytest.mark.integration


async def post(s: AgentSystem, key: str, data: Any, query: str = "") -> tuple[int, Any, str | None]:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key}
    if isinstance(data, bytes):
        headers["Content-Type"] = "image/png"
    async with s.system.http.post(f"{s.api}/v1/uploads{query}", data=data, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Idempotent-Replayed")


def form(data: bytes, name: str) -> aiohttp.FormData:
    out = aiohttp.FormData()
    out.add_field("file", data, filename=name, content_type="application/pdf")
    return out


async def test_an_upload_with_a_key_is_kept_once_and_answered_again(s: AgentSystem) -> None:
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2000  # 512 KiB: over the API's body limit
    first = await post(s, "up-1", picture, "?name=receipt.png")
    assert first[0] == 201, first
    assert (first[1]["size"], first[1]["name"], first[2]) == (len(picture), "receipt.png", None)
    again = await post(s, "up-1", picture, "?name=receipt.png")
    assert again == (201, first[1], "true")  # the same upload, not a second one
    other = await post(s, "up-1", picture[:-1], "?name=receipt.png")
    assert other[0] == 422, other  # another file with the same key

    pdf = b"%PDF-1.4\r\n--not-a-boundary\r\n" * 100
    sent = await post(s, "up-2", form(pdf, "invoice.pdf"))
    assert sent[0] == 201, sent
    assert (sent[1]["size"], sent[1]["name"], sent[1]["content_type"]) == (len(pdf), "invoice.pdf", "application/pdf")

    too_large = await post(s, "up-3", b"\0" * (25 * 1024 * 1024 + 1))
    assert too_large[0] == 413 and "at most" in too_large[1]["error"], too_large
