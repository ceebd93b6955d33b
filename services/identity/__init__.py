"""Who a customer is: identities (channel addresses normalised by ``services.identity.addresses``)
resolved to customer ids through the ``rd_identity`` KV bucket with create-only writes (two
racing first messages cannot make two customers).

Keys hold no address: an identity's key is ``h.<HMAC-SHA256(identity) hex>`` under the system
key ``identity`` (``events.personal.CustomerKeys.system_key``), since a KV key stays on disk in
its messages' subjects (a deleted key's tombstone too). Earlier versions keyed the bucket by
the address itself (``phone.=2B15551234567``): such a *legacy* key is moved to its hashed key
the first time it is looked up, and ``relaydesk customers migrate-identities`` moves all of
them at once and then removes every trace of the legacy keys (see ``migrate_all``). A bucket
that holds no legacy key (a fresh one, or after ``migrate_all``) says so (``_meta.hashed``), and
lookups then skip looking for one.

A key that goes (an erasure, a move) is *purged*: a KV bucket's stream denies message deletes
(so no secure erase), and a purge leaves one marker on the key's subject. On a hashed key that
marker and the removed value (a customer id) name no address to whoever reads the bucket alone;
but the HMAC key lives in the NATS store too, so whoever holds the whole store can test a known
address against the markers and learn that it was a customer's, and which (pseudonymous) one:
README *Erasure* says what erasure does not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import uuid

import structlog
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events import subjects
from events.kv import bucket_keys
from services.identity.addresses import PLAIN, IdentityRules, earlier_forms, identity_for, mask, parse_identity

log = structlog.get_logger(__name__)

_KV_SAFE = re.compile(r"[^-_.a-zA-Z0-9]")


def kv_key(identity: str) -> str:
    """The *legacy* key (before keys were hashed): '+' '@' ':' and friends escaped as =XX
    (reversible, readable, and so the address in clear)."""
    kind, _, address = identity.partition(":")
    return kind + "." + _KV_SAFE.sub(lambda m: "".join(f"={b:02X}" for b in m.group().encode()), address)


_ESCAPED = re.compile(r"(?:=[0-9A-F]{2})+")


def legacy_identity(key: str) -> str | None:
    """The identity a legacy key (``kv_key``) stands for; None for any other key."""
    kind, dot, address = key.partition(".")
    if not dot or not address or key.startswith((HASHED_PREFIX, "_")):  # "_": _merged., _meta.
        return None
    try:
        text = _ESCAPED.sub(lambda m: bytes.fromhex(m.group().replace("=", "")).decode(), address)
    except (UnicodeDecodeError, ValueError):
        return None
    return f"{kind}:{text}"


HASHED_PREFIX = "h."
HASHED_ONLY_KEY = "_meta.hashed"
"""Present once the bucket holds no legacy key (a fresh bucket, or after ``migrate_all``):
lookups then skip the legacy key (one KV read fewer for an address not known yet)."""
IDENTITY_KEY_NAME = "identity"  # the system key (RD_KEYS) the identity HMAC is keyed with


def hashed_key(secret: bytes, identity: str) -> str:
    """The bucket key of ``identity``: ``h.`` and its HMAC-SHA256 under ``secret``, in hex."""
    return HASHED_PREFIX + hmac.new(secret, identity.encode(), hashlib.sha256).hexdigest()


# How many keys a directory remembers having met (~100 bytes each).
MET_LIMIT = 100_000


def new_customer_id() -> str:
    return "cu_" + uuid.uuid4().hex[:20]


MERGED_PREFIX = "_merged."
"""``_merged.<customer>`` → the customer it was merged into: written create-only before the
``CustomersMerged`` event, so two operators cannot merge one customer into two others."""


ERASED_PREFIX = "_erased."
"""``_erased.<customer>``: that customer's family is being erased, or was (written before the
erasure's first step, never removed): a merge will not point addresses at it any more, and
``relaydesk customers`` refuses to merge into or out of it (services/customers/README.md)."""


class IdentityDirectory:
    """The ``rd_identity`` bucket. ``secret`` keys the HMAC of identities; without it, the
    system key ``identity`` is read (created the first time) from ``RD_KEYS`` on first use."""

    def __init__(
        self,
        kv: KeyValue,
        rules: IdentityRules = PLAIN,
        *,
        secret: bytes | None = None,
        bucket: str = subjects.IDENTITY_BUCKET,
    ) -> None:
        self.kv = kv
        self.rules = rules
        self.bucket = bucket
        self._secret = secret
        self._legacy: bool | None = None  # may the bucket hold legacy keys? (None: not checked yet)
        self._legacy_check = asyncio.Lock()
        # Keys found or created here (insertion order: the oldest goes first): see ``resolve``.
        self._met: dict[str, None] = {}

    @property
    def js(self) -> JetStreamContext:
        js: JetStreamContext = self.kv._js  # nats-py keeps the bucket's JetStream context here
        return js

    async def secret(self) -> bytes:
        if self._secret is None:
            from events.personal import CustomerKeys

            self._secret = await CustomerKeys(self.js).system_key(IDENTITY_KEY_NAME)
        return self._secret

    async def warm_up(self) -> None:
        """Read the HMAC key and check the bucket for legacy keys now, once, rather than in the
        first of many lookups at once (a process about to take a burst calls this first)."""
        await self.secret()
        await self._legacy_possible()

    async def key(self, identity: str) -> str:
        """The bucket key of ``identity`` (its HMAC: no address in clear)."""
        return hashed_key(await self.secret(), identity)

    async def _get(self, key: str) -> str | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def drop_key(self, key: str) -> bool:
        """Remove ``key`` and its history (a KV purge); True if it held a value."""
        if await self._get(key) is None:
            return False
        await self.kv.purge(key)
        return True

    async def _migrate(self, identity: str, hashed: str) -> str | None:
        """A legacy key of ``identity``: moved to its hashed key (create-only: a hashed key
        written meanwhile wins), then erased. Returns the owner now on record."""
        legacy = kv_key(identity)
        owner = await self._get(legacy)
        if owner is None:
            return None
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.create(hashed, owner.encode())
        await self.drop_key(legacy)
        log.info("identity.migrated", customer_id=owner, identity=mask(identity))
        return await self._get(hashed)

    async def migrate_all(self) -> int:
        """Move every legacy key to its hashed key (``relaydesk customers migrate-identities``),
        then remove the legacy keys' purge markers from the stream (a subject purge: their
        subjects hold addresses); returns how many were moved. Safe to run again, and while
        intake runs. (Bytes of removed messages stay in the bucket's files until NATS drops the
        file block; ``relaydesk customers migrate-identities --compact`` rewrites the bucket.)"""
        moved = 0
        for key in await bucket_keys(self.js, self.bucket):  # deleted ones too: their markers name addresses
            identity = legacy_identity(key)
            if identity is None:
                continue
            if await self._migrate(identity, await self.key(identity)) is not None:
                moved += 1
            await self.js.purge_stream(f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{key}")
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.create(HASHED_ONLY_KEY, b"1")
        return moved

    async def compact(self) -> int:
        """Rewrite the bucket so no removed entry's bytes stay on disk, safely against being
        cut short (``services.identity.compaction``). Returns how many entries were kept."""
        from services.identity.compaction import compact  # it builds on this module

        return await compact(self)

    async def forget(self, identity: str) -> bool:
        """Remove ``identity``'s mapping (hashed and legacy keys, and its earlier forms')."""
        dropped = await self.drop_key(await self.key(identity))
        for earlier in earlier_forms(identity):
            dropped = await self.drop_key(await self.key(earlier)) or dropped
        return await self.drop_key(kv_key(identity)) or dropped

    def identity(self, channel: str, address: str, *, platform: str | None = None) -> str:
        return identity_for(channel, address, platform=platform, rules=self.rules)

    def parse(self, text: str) -> str:
        return parse_identity(text, self.rules)

    async def lookup(self, identity: str) -> str | None:
        return await self._lookup(identity, await self.key(identity))

    async def _lookup(self, identity: str, hashed: str) -> str | None:
        found = await self._get(hashed)
        if found is not None:
            return found
        for earlier in earlier_forms(identity):
            if (owner := await self._adopt(earlier, identity, hashed)) is not None:
                return owner
        if not await self._legacy_possible():
            return None
        return await self._migrate(identity, hashed)

    async def _adopt(self, earlier: str, identity: str, hashed: str) -> str | None:
        """A key of an earlier form of ``identity`` (``earlier_forms``): moved to the
        identity's own key (create-only: one written meanwhile wins), then dropped, so an
        erasure finds it. Returns the owner now on record, None when there was no such key."""
        old = await self.key(earlier)
        owner = await self._get(old)
        if owner is None:
            return None
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.create(hashed, owner.encode())
        await self.drop_key(old)
        log.info("identity.adopted_earlier_form", customer_id=owner, identity=mask(identity))
        return await self._get(hashed)

    async def _legacy_possible(self) -> bool:
        """Checked once per directory: False when the bucket says it holds no legacy key, or
        is still empty (then it says so from now on)."""
        # One check at a time: two first lookups racing would see the bucket non-empty (the
        # other's marker, or its new key) and conclude "legacy" for the life of the process.
        async with self._legacy_check:
            if self._legacy is None:
                if await self._get(HASHED_ONLY_KEY) is not None:
                    self._legacy = False
                elif not (await self.js.stream_info(f"KV_{self.bucket}")).state.messages:
                    with contextlib.suppress(KeyWrongLastSequenceError):
                        await self.kv.create(HASHED_ONLY_KEY, b"1")
                    self._legacy = False
                else:
                    # Another process may have marked it since the first get (an empty
                    # bucket at its start): read the marker again before deciding.
                    self._legacy = await self._get(HASHED_ONLY_KEY) is None
        return self._legacy

    async def resolve(self, identity: str) -> tuple[str, bool]:
        """The customer id for ``identity`` and whether this call created it.

        An identity this directory has not met yet is more likely a new customer than one it
        met: for it the create comes first (one round trip for a new customer instead of a
        read and a create; a known customer it had not met costs a failed create, then a read).
        Only where the bucket holds no legacy key: a legacy one must be found before a create."""
        hashed = await self.key(identity)
        if hashed not in self._met and self._legacy is False and not earlier_forms(identity):
            candidate = new_customer_id()
            try:
                await self.kv.update(hashed, candidate.encode(), last=0)  # create-only, no read
            except KeyWrongLastSequenceError:
                pass  # it exists, or a delete/purge marker holds its subject: read it below
            else:
                self._meet(hashed)
                return candidate, True
        existing = await self._lookup(identity, hashed)
        if existing:
            self._meet(hashed)
            return existing, False
        candidate = new_customer_id()
        try:
            await self.kv.create(hashed, candidate.encode())
        except KeyWrongLastSequenceError:
            winner = await self._lookup(identity, hashed)
            if winner is None:  # created and deleted in between: vanishingly rare, try again
                return await self.resolve(identity)
            self._meet(hashed)
            return winner, False
        self._meet(hashed)
        return candidate, True

    def _meet(self, hashed: str) -> None:
        """Remember a key that holds a customer (the oldest forgotten past ``MET_LIMIT``)."""
        self._met[hashed] = None
        if len(self._met) > MET_LIMIT:
            del self._met[next(iter(self._met))]

    async def claim(self, identity: str, customer_id: str) -> str:
        """Give ``identity`` to ``customer_id`` unless it already belongs to someone
        (create-only); returns whom it belongs to now."""
        owner = await self.lookup(identity)  # (moves a legacy key first)
        if owner is not None:
            return owner
        try:
            await self.kv.create(await self.key(identity), customer_id.encode())
        except KeyWrongLastSequenceError:
            owner = await self.lookup(identity)
            if owner is None:
                return await self.claim(identity, customer_id)
            return owner
        return customer_id

    async def link(self, identity: str, customer_id: str) -> None:
        """Point ``identity`` at ``customer_id`` whoever had it (a merge moving addresses)."""
        await self.kv.put(await self.key(identity), customer_id.encode())
        await self.drop_key(kv_key(identity))  # a legacy key would be found by nobody now

    async def merged_into(self, customer_id: str) -> str | None:
        try:
            entry = await self.kv.get(MERGED_PREFIX + customer_id)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def mark_erased(self, customer_id: str) -> None:
        """Record that ``customer_id`` is being erased (before the erasure's first step)."""
        await self.kv.put(ERASED_PREFIX + customer_id, b"1")

    async def erased(self, *customer_ids: str) -> str | None:
        """The first of ``customer_ids`` marked by ``mark_erased``, None if none is."""
        for customer_id in customer_ids:
            if await self._get(ERASED_PREFIX + customer_id) is not None:
                return customer_id
        return None

    async def forget_if(self, identity: str, customer_id: str) -> bool:
        """Remove ``identity``'s mapping only while it names ``customer_id`` (a purge guarded by
        the entry's revision: one a racing intake or link wrote meanwhile stays)."""
        key = await self.key(identity)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return False
        if entry.value is None or entry.value.decode() != customer_id or entry.revision is None:
            return False
        headers = {
            "KV-Operation": "PURGE",
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(entry.revision),
        }
        try:
            await self.js.publish(f"$KV.{self.bucket}.{key}", b"", headers=headers)
        except BadRequestError:  # wrong last sequence: rewritten meanwhile, it is someone else's now
            return False
        self._met.pop(key, None)
        return True

    async def mark_merged(self, customer_id: str, survivor_id: str) -> str:
        """Record (create-only) that ``customer_id`` goes into ``survivor_id``; returns the
        survivor on record (another one if someone merged it first)."""
        try:
            await self.kv.create(MERGED_PREFIX + customer_id, survivor_id.encode())
        except KeyWrongLastSequenceError:
            found = await self.merged_into(customer_id)
            return found if found is not None else await self.mark_merged(customer_id, survivor_id)
        return survivor_id

    async def unmark_merged(self, customer_id: str) -> None:
        """Undo ``mark_merged`` when the merge event could not be written."""
        await self.kv.delete(MERGED_PREFIX + customer_id)
