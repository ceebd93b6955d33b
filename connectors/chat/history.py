"""Per-address catch-up history in a JetStream stream.

Every server→client frame worth catching up on (a visitor's acknowledged message, an agent's
reply) is one message in the stream ``RD_CHAT`` (``history_stream``), on the subject
``rd.chat.h.<sha256(address), 128 bits hex>``; the stream keeps ``history_frames`` per
subject, for ``history_max_age``, in files, with ``history_replicas`` replicas. The address
never appears in a subject or a frame (a user address carries the site's user id).

* **Sequence**: a frame's ``seq`` is its *stream* sequence. It only grows (per address and
  overall), survives restarts and is the same on every instance, so ``after_seq`` is simply
  "frames on my subject with a higher stream sequence". It is not dense: other addresses'
  frames take the numbers in between.
* **Epoch**: a hash of the stream's creation time. It changes only if the stream is deleted
  and created again (sequences start over), which is the one case where a client's
  ``after_seq`` means nothing any more.
* **Dedupe**: ``Nats-Msg-Id`` per (address, kind, key) within ``history_dedupe_window``: a
  resent message or a reply delivered twice is one frame, and the duplicate's ack names the
  first frame's sequence.
* **Live**: the stream republishes each stored frame (never a duplicate) on
  ``rd.chat.live.<hash>`` with ``Nats-Sequence`` and ``Nats-Last-Sequence`` (the previous
  sequence *on that subject*): an instance subscribes to the addresses whose sockets it holds,
  and a ``Nats-Last-Sequence`` above what a socket has seen is a gap it reads from the stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RePublish, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from events.skips import count_skip
from events.stream_setup import SETUP_BUDGET_S, SetupFailed, describe, ensure_store, patiently
from events.stream_specs import stream_spec

from .ratelimit import RateLimiter as RateLimiter  # it lived here; importable from here still

log = structlog.get_logger(__name__)

# A visitor's message, an agent's reply, or the notice that the conversation was resolved
# (``closed``, keyed by the conversation id: the widget says so, and a next message opens a new one).
FrameKind = Literal["message", "reply", "closed"]
FRAME_KINDS: tuple[FrameKind, ...] = ("message", "reply", "closed")

MSG_ID = "Nats-Msg-Id"
ORIGIN = "Rd-Chat-Socket"  # the socket a visitor message came from (it gets the ack, not the echo)
SEQUENCE = "Nats-Sequence"
LAST_SEQUENCE = "Nats-Last-Sequence"
READ_LIMIT = 10_000  # frames read in one go (history_frames is the real bound)


class HistoryUnavailable(Exception):
    """The history stream did not answer (NATS away, timeout, stream missing)."""


class _Stored(msgspec.Struct, omit_defaults=True):
    kind: str
    key: str
    text: str
    at: datetime
    name: str = ""


@dataclass(frozen=True)
class Frame:
    seq: int
    kind: FrameKind
    key: str  # client_msg_id (message), reply_id (reply), conversation id (closed): the dedupe key
    text: str
    at: datetime
    sender_name: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "seq": self.seq, "text": self.text, "at": self.at.isoformat()}
        if self.kind == "message":
            out["client_msg_id"] = self.key
        elif self.kind == "reply":
            out["reply_id"] = self.key
            if self.sender_name:
                out["from"] = self.sender_name
        return out

    def encode(self) -> bytes:
        return msgspec.json.encode(_Stored(self.kind, self.key, self.text, self.at, self.sender_name))

    @classmethod
    def decode(cls, seq: int, data: bytes) -> Frame:
        raw = msgspec.json.decode(data, type=_Stored)
        if raw.kind not in FRAME_KINDS:
            raise ValueError(f"unknown frame kind {raw.kind!r}")
        return cls(seq, cast(FrameKind, raw.kind), raw.key, raw.text, raw.at, raw.name)


@dataclass(frozen=True)
class LiveFrame:
    """A frame as republished for live push: the frame, the previous sequence on its subject,
    and the socket it came from (if a visitor message sent on a socket)."""

    frame: Frame
    previous: int
    origin: str

    @classmethod
    def from_msg(cls, msg: Msg) -> LiveFrame:
        headers = msg.headers or {}
        frame = Frame.decode(int(headers[SEQUENCE]), msg.data)
        return cls(frame, int(headers.get(LAST_SEQUENCE) or 0), headers.get(ORIGIN, ""))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass
class ChatHistory:
    """The history stream of one connector (shared by every instance with the same settings)."""

    stream: str = "RD_CHAT"
    prefix: str = "rd.chat"
    max_frames: int = 200
    max_age: float = 30 * 24 * 3600.0
    max_bytes: int = 1024 * 1024 * 1024
    replicas: int = 1
    dedupe_window: float = 24 * 3600.0
    timeout: float = 5.0
    js: JetStreamContext | None = None
    epoch: str = ""

    # -- names --------------------------------------------------------------------------

    def subject(self, address: str) -> str:
        return f"{self.prefix}.h.{_digest(address)}"

    def live_subject(self, address: str) -> str:
        return f"{self.prefix}.live.{_digest(address)}"

    def config(self) -> StreamConfig:
        window = self.dedupe_window
        if self.max_age > 0:
            window = min(window, self.max_age)  # the server refuses a window longer than max_age
        return StreamConfig(
            name=self.stream,
            description="Relaydesk web chat: catch-up history per address (connectors/chat)",
            subjects=[f"{self.prefix}.h.*"],
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            max_msgs_per_subject=self.max_frames,
            max_age=self.max_age,
            max_bytes=self.max_bytes if self.max_bytes > 0 else -1,
            duplicate_window=window,
            republish=RePublish(src=f"{self.prefix}.h.>", dest=f"{self.prefix}.live.>"),
        )

    # -- setup --------------------------------------------------------------------------

    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise RuntimeError("chat history: no JetStream context (attach the connector first)")
        return self.js

    async def ensure(self, budget: float = SETUP_BUDGET_S) -> None:
        """Create the stream, or bring its limits in line with the settings (a field NATS
        cannot change in place is logged, ``streams.update_refused``, and what runs is kept);
        learn the epoch. A busy or electing NATS is waited out for ``budget`` seconds."""
        js = self._js()
        spec = stream_spec(self.config(), owner="connector chat", required=False)

        async def setup() -> StreamInfo:
            await ensure_store(js, spec)
            return await js.stream_info(self.stream)

        try:
            info = await patiently(setup, what=f"history stream {self.stream}", budget=budget)
        except (TimeoutError, NatsError, OSError, SetupFailed) as err:
            # The server's description says what is wrong (replicas over the cluster size, …).
            reason = str(err) if isinstance(err, SetupFailed) else f"history stream {self.stream}: {describe(err)}"
            raise HistoryUnavailable(reason) from err
        created = info.created.isoformat() if info.created else self.stream
        self.epoch = hashlib.sha256(f"{self.stream}\n{created}".encode()).hexdigest()[:12]

    # -- frames -------------------------------------------------------------------------

    async def append(
        self, address: str, kind: FrameKind, key: str, text: str, sender_name: str = "", origin: str = ""
    ) -> tuple[Frame, bool]:
        """Store the frame for (address, kind, key) once: ``(frame, new)``. A retry within the
        dedupe window gets the sequence of the frame stored the first time."""
        frame = Frame(0, kind, key, text, datetime.now(UTC), sender_name)
        headers = {MSG_ID: f"{kind}:{_digest(address, kind, key)}"}
        if origin:
            headers[ORIGIN] = origin
        try:
            ack = await self._js().publish(self.subject(address), frame.encode(), timeout=self.timeout, headers=headers)
        except (TimeoutError, NatsError, OSError) as err:
            raise HistoryUnavailable(f"history stream did not acknowledge: {type(err).__name__}") from err
        return Frame(int(ack.seq), kind, key, text, frame.at, sender_name), not ack.duplicate

    async def read(self, address: str, after: int, upto: int | None = None, limit: int = READ_LIMIT) -> list[Frame]:
        """The frames of ``address`` with ``after < seq <= upto`` (to the end without ``upto``),
        oldest first. Reads go through the stream leader (not direct gets), so a frame that
        was acknowledged is always found."""
        js = self._js()
        subject = self.subject(address)
        out: list[Frame] = []
        seq = max(after, 0) + 1
        try:
            while len(out) < limit and (upto is None or seq <= upto):
                try:
                    raw = await js.get_msg(self.stream, seq, subject=subject, next=True)
                except NotFoundError:
                    break
                stored = int(raw.seq or 0)
                if stored < seq or (upto is not None and stored > upto):
                    break
                try:
                    out.append(Frame.decode(stored, raw.data or b""))
                except (ValueError, msgspec.DecodeError) as err:
                    # Not a frame this version writes (written by hand, or by a later version):
                    # the rest of the history still replays.
                    log.warning(
                        "chat.history_frame_skipped",
                        stream=self.stream,
                        seq=stored,
                        subject=subject,
                        error=type(err).__name__,
                    )
                    count_skip("chat.history_frame")
                seq = stored + 1
        except (TimeoutError, NatsError, OSError) as err:
            raise HistoryUnavailable(f"history stream did not answer: {type(err).__name__}") from err
        return out

    async def erase(self, address: str, only: Callable[[Frame], bool] | None = None) -> int:
        """Erasure (``relaydesk customers erase``): delete every frame of ``address`` (or those
        ``only`` picks: an address taken away from the customer holds its next owner's frames
        too) with JetStream's secure erase (the server overwrites the bytes on disk; the subject
        is a hash, so no address is left). Returns how many frames went. The live copies were
        never stored. Raises ``HistoryUnavailable`` when the stream does not answer."""
        js = self._js()
        subject = self.subject(address)
        erased, seq = 0, 1
        try:
            while True:
                try:
                    raw = await js.get_msg(self.stream, seq, subject=subject, next=True)
                except NotFoundError:
                    break
                stored = int(raw.seq or 0)
                if stored < seq:
                    break
                seq = stored + 1
                if only is not None and not self._picked(only, stored, raw.data or b"", subject):
                    continue
                with contextlib.suppress(NotFoundError):  # gone meanwhile (its age, its limit)
                    await js.delete_msg(self.stream, stored)
                    erased += 1
        except (TimeoutError, NatsError, OSError) as err:
            raise HistoryUnavailable(f"history stream did not answer: {type(err).__name__}") from err
        return erased

    def _picked(self, only: Callable[[Frame], bool], seq: int, data: bytes, subject: str) -> bool:
        try:
            return only(Frame.decode(seq, data))
        except (ValueError, msgspec.DecodeError) as err:  # whose it is cannot be told: kept
            error = type(err).__name__
            log.warning("chat.erase_frame_unread", stream=self.stream, seq=seq, subject=subject, error=error)
            count_skip("chat.erase_frame")
            return False

    async def last_seq(self, address: str) -> int:
        """The sequence of the address's newest frame (0: none kept)."""
        try:
            raw = await self._js().get_last_msg(self.stream, self.subject(address))
        except NotFoundError:
            return 0
        except (TimeoutError, NatsError, OSError) as err:
            raise HistoryUnavailable(f"history stream did not answer: {type(err).__name__}") from err
        return int(raw.seq or 0)
