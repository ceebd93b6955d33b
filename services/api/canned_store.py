"""Canned replies kept by the API, beside those of the configuration file: supervisors and
operators add, change and remove them without a restart (``PUT``/``DELETE
/v1/canned-replies/{id}``).

They are one document in one key of the KV bucket ``rd_canned_replies``: every API process
reads it whole for each request (one round trip, no cache to go stale), and a change is a
compare-and-set on the key's revision, tried again when another process changed it meanwhile,
so two supervisors saving at once lose nothing. The bucket keeps the last
``HISTORY`` versions of the document: who changed what, and what it said before. No personal
data is written here (placeholders are filled per conversation, at read time).

Why not events on the log: canned replies are team settings, not facts about customers or
agents; every service folding ``rd.evt.>`` would read them for nothing.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from datetime import datetime

import msgspec
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.stream_setup import ensure_store
from events.stream_specs import kv_spec
from events.streams import CANNED_BUCKET, canned_bucket

KEY = "replies"
MAX_REPLIES = 200
MAX_TITLE = 200
MAX_TEXT = 4_000
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The whole document, encoded: one NATS message, so under the server's max_payload (1 MiB by
# default) with room to spare. 200 replies of 4,000 characters do not fit (nor 40 of control
# characters, six bytes each in JSON): found by an audit, the save past 1 MiB was a 500.
MAX_DOCUMENT_BYTES = 512 * 1024
CHANGE_TRIES = 30  # each lost race waits a little longer, at random: saves at once all get in


class StoredReply(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    title: str
    text: str
    updated_at: datetime
    updated_by: str


class Document(msgspec.Struct, kw_only=True):
    replies: list[StoredReply] = []


class CannedConflict(Exception):
    """The document kept changing under a compare-and-set (``CHANGE_TRIES`` times)."""


class CannedTooLarge(Exception):
    """The document after the change would not fit in ``MAX_DOCUMENT_BYTES`` (or in the NATS
    server's max_payload, when that is set lower): nothing was stored."""


class CannedStore:
    """The document in the bucket, opened (created with ``replicas`` if missing) on first use."""

    def __init__(self, js: Callable[[], JetStreamContext], replicas: int = 1) -> None:
        self._js = js
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            js = self._js()
            await ensure_store(js, kv_spec(canned_bucket(self._replicas), owner="api", required=False), update=False)
            self._kv = await js.key_value(CANNED_BUCKET)
        return self._kv

    async def open(self) -> None:
        """Create the bucket now if it is missing (the API at start: every store exists once
        the services run, as ``relaydesk status`` and the replicas check expect)."""
        await self._bucket()

    async def read(self) -> tuple[Document, int]:
        """The document and its revision (0: never written)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(KEY)
        except (KeyNotFoundError, KeyDeletedError):  # never written, or deleted by hand
            return Document(), 0
        if not entry.value:  # deleted or purged by hand: nothing kept
            return Document(), entry.revision or 0
        return msgspec.json.decode(entry.value, type=Document), entry.revision or 0

    async def change(self, edit: Callable[[Document], bool]) -> Document:
        """Apply ``edit`` to the latest document and store it if ``edit`` says it changed
        anything; another process's change meanwhile makes it read and edit again."""
        kv = await self._bucket()
        for attempt in range(CHANGE_TRIES):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.005 * min(attempt, 10)))
            document, revision = await self.read()
            if not edit(document):
                return document
            data = msgspec.json.encode(document)
            if len(data) > MAX_DOCUMENT_BYTES:
                raise CannedTooLarge(too_large(len(data)))
            try:
                if revision:
                    await kv.update(KEY, data, last=revision)
                else:
                    await kv.create(KEY, data)
            except KeyWrongLastSequenceError:
                continue
            except MaxPayloadError as err:  # a server whose max_payload is below ours
                raise CannedTooLarge(too_large(len(data))) from err
            return document
        raise CannedConflict("the canned replies kept changing; try again")


def too_large(size: int) -> str:
    return (
        f"the team's canned replies would take {size} bytes, over {MAX_DOCUMENT_BYTES} "
        "(all of them together): shorten or remove some first"
    )
