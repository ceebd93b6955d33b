"""Listing a stream's subjects pages past the server's 100,000 a request (``events.kv``): found
while moving the identity directory's key listing off nats-py's watcher (which raced), whose
``stream_info`` asks for one page only, so a bucket of more keys was listed short."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from events.kv import bucket_keys, stream_subjects


class PagingServer:
    """Answers ``STREAM.INFO`` as nats-server does, ``limit`` subjects a page."""

    def __init__(self, subjects: list[str], limit: int) -> None:
        self.subjects, self.limit, self.requests = subjects, limit, 0

    async def request(self, subject: str, data: bytes, timeout: float) -> Any:
        self.requests += 1
        if not subject.endswith(".KV_b"):
            body: dict[str, Any] = {"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
            return SimpleNamespace(data=json.dumps(body).encode())
        offset = json.loads(data)["offset"]
        page = self.subjects[offset : offset + self.limit]
        body = {"state": {"subjects": dict.fromkeys(page, 1)}, "total": len(self.subjects), "offset": offset}
        return SimpleNamespace(data=json.dumps(body).encode())


def js_of(server: PagingServer) -> Any:
    return SimpleNamespace(_nc=server, _prefix="$JS.API", _timeout=1.0)


async def test_every_page_is_read() -> None:
    keys = [f"$KV.b.k{i:02d}" for i in range(7)]
    server = PagingServer(keys, limit=3)
    assert await bucket_keys(js_of(server), "b") == [k.removeprefix("$KV.b.") for k in keys]
    assert server.requests == 3


async def test_a_missing_stream_is_not_found_and_a_missing_bucket_has_no_keys() -> None:
    with pytest.raises(NotFoundError):
        await stream_subjects(js_of(PagingServer([], 3)), "KV_other", ">")
    assert await bucket_keys(js_of(PagingServer([], 3)), "other") == []
