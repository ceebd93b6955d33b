"""The parser shortcut of ``events.raw_delivery``: whatever the reads cut the protocol stream
into, every message reaches the same place, in the same order, with the same bytes as through
nats-py's own parser; and once the last raw handler goes, nats-py's parser is back."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.protocol.parser import Parser

from events.raw_delivery import drop_raw_handler, raw_handlers

RAW_SID = 1  # a raw subscription (the replay's)
OTHER_SID = 2  # an ordinary one: nats-py's delivery


class Client:
    """What nats-py's parser calls on its client, writing down what arrives."""

    def __init__(self, seen: list[tuple[Any, ...]]) -> None:
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.seen = seen
        self._ps = Parser(self)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.seen.append(("nats-py", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.seen.append(("err", err))


def hmsg(sid: int, subject: bytes, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    line = b"HMSG " + subject + b" " + str(sid).encode() + (b" " + reply if reply else b"")
    return line + b" %d %d\r\n" % (len(headers), len(headers) + len(payload)) + headers + payload + b"\r\n"


def msg(sid: int, subject: bytes, payload: bytes) -> bytes:
    return b"MSG " + subject + b" " + str(sid).encode() + b" %d\r\n" % len(payload) + payload + b"\r\n"


tokens = st.text(alphabet="abcxyz019._-", min_size=1, max_size=12).map(str.encode)
payloads = st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"__"))
headers = st.sampled_from(
    [b"NATS/1.0\r\nNats-Sequence: 7\r\n\r\n", b"NATS/1.0 100 FlowControl Request\r\n\r\n", b"NATS/1.0\r\n\r\n"]
)
operations = st.one_of(
    st.builds(hmsg, st.sampled_from([RAW_SID, OTHER_SID]), tokens, st.one_of(st.just(b""), tokens), headers, payloads),
    st.builds(msg, st.sampled_from([RAW_SID, OTHER_SID]), tokens, payloads),
    st.sampled_from([b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b'INFO {"server_id":"x"}\r\n']),
)


async def deliver(stream: bytes, cuts: list[int], *, raw: bool) -> list[tuple[Any, ...]]:
    """What arrives where when ``stream`` comes in reads cut at ``cuts``; ``raw``: with a raw
    handler for ``RAW_SID`` (the shortcut), else nats-py's parser alone."""
    seen: list[tuple[Any, ...]] = []
    client = Client(seen)
    if raw:
        table = raw_handlers(client)
        assert table is not None
        table[RAW_SID] = lambda subject, reply, data, hdrs: seen.append(("raw", subject, reply, data, hdrs))
    points = sorted({c % (len(stream) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        await client._ps.parse(stream[start:end])
    if not raw:  # what the dispatcher does for RAW_SID, to compare like with like
        seen[:] = [("raw", *m[2:]) if m[0] == "nats-py" and m[1] == RAW_SID else m for m in seen]
    return seen


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=25), st.lists(st.integers(min_value=0, max_value=5_000), max_size=12))
def test_every_message_arrives_as_through_nats_py_however_the_reads_cut_the_stream(
    ops: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(ops)
    expected = asyncio.run(deliver(stream, [], raw=False))
    assert asyncio.run(deliver(stream, cuts, raw=True)) == expected
    assert asyncio.run(deliver(stream, list(range(len(stream))), raw=True)) == expected  # a byte a read


def test_the_last_raw_handler_gone_nats_py_parses_again() -> None:
    client = Client([])
    table = raw_handlers(client)
    assert table is not None
    table[RAW_SID] = lambda *_: None
    assert "parse" in vars(client._ps)
    drop_raw_handler(client, RAW_SID)
    assert "parse" not in vars(client._ps)
    assert "_process_msg" not in vars(client)
