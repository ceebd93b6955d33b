"""A client whose request body never all arrives: the head announces 100 bytes, a few are sent,
then nothing. Every port must answer it (408) within its deadline rather than hold the request
and its handler for as long as the client likes."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def answer_to_trickling_body(
    base: str, path: str, *, content_type: str, start: bytes, headers: str = ""
) -> bytes:
    """The head of the answer to a POST of ``path`` on ``base`` (``http://host:port``) whose body
    stops after ``start``; ``headers``: more header lines, each ending in CR LF."""
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{headers}Content-Length: 100\r\n\r\n"
        )
        writer.write(head.encode() + start)
        await writer.drain()
        async with asyncio.timeout(20):  # a deadline for the test, not the expected time
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
