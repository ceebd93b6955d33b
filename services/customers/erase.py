"""Erasure on request (GDPR Art. 17): ``relaydesk customers erase`` and ``DELETE /v1/customers/{id}``.

A customer is one person, and a merge said two customers were the same person: the erasure
takes the customer's *family*, the survivor and every customer merged into it. Asking for a
merged-away customer erases the family of the customer it was merged into (the same person).

In this order, so that a retry after a crash anywhere still knows what to delete (the keys,
which make the log's copy of the identities readable, go last but one):

0. mark every customer of the family erased in ``rd_identity`` (``_erased.<id>``, kept for good):
   from then on a merge will not point addresses at the family (a merge racing this erasure
   checks the mark after pointing them, and takes them back), nor merge into or out of it;
1. read the family from the log: identities, provider message ids, attachments, open conversations;
2. erase the identity mappings in ``rd_identity`` (new messages from those addresses make a new
   customer from now on);
3. erase the web chat history of the chat addresses (``RD_CHAT``);
4. erase the raw provider messages of the family in ``RD_INBOUND`` (matched by sender identity,
   provider message id or customer id) and, from them and the log, the email attachments;
   then the files agents sent them: the uploads (``up_…``) the family's ``ReplyRequested``
   events name (every ``DeliverReply`` is made from one; a file sent to several customers
   goes for all of them, like a shared email attachment);
5. purge the family's delivery records (``rd_deliveries``: notices quote the first lines),
   parked messages (``rd_parked``: a dead letter keeps its payload; an unparseable mail that
   names one of their addresses goes with its raw bytes) and kept API answers
   (``rd_idempotency``: a merge's answer names the addresses; found by the ids they name).
   Messages and records are matched without decoding them strictly (``erase_match``):
   malformed ones are the likeliest to be left behind;
6. resolve the family's open conversations (nobody can reply to an erased person), marked
   ``erased``: the delivery service's resolved notices then quote nothing of theirs; then
   erase the replies to them still queued in ``RD_OUTBOUND`` (a connector that kept their key
   cached would send one on a retry);
7. destroy the family's data keys (``events.personal``): their personal data in ``RD_EVENTS``
   reads as ``[erased]`` for good;
8. append ``CustomerErased`` on the survivor's ``_customer`` subject (once): the projector
   redacts the timelines, and every reader forgets the keys it cached. A merge into the
   family written meanwhile (it checked before the mark was there) makes the erasure start
   again with that customer in the family; none can be written after ``CustomerErased``;
9. resolve what was opened on the family while this ran (an intake that had resolved the sender
   before step 2 and read the key before step 7): intake records nothing on it after step 8.
   Then read ``RD_INBOUND`` again after where step 4 ended: what arrived meanwhile from the
   family's addresses, and those conversations' messages (by their provider ids), go with
   their attachments (``services.customers.erase_inbound``).

Between 1 and 2 the erasure records itself with the family's addresses sealed
(``services.customers.erase_job``): after step 7 they no longer read on the log, and a retry
or the API's resume at start reads them there; the record and its key go after step 9.

Every delete from a stream is a JetStream secure erase (the bytes on disk are overwritten),
never a purge; KV buckets deny message deletes, so their entries are purged (the identity
keys are HMACs, delivery records expire with their file blocks). Running it again is safe:
what is gone stays gone, and ``CustomerErased`` is written once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import structlog

from connectors.chat.history import ChatHistory
from connectors.email.erasure import attachment_ref, erase_attachments
from events import subjects
from events.model import ConversationOpened, ConversationResolved, CustomerErased, MessageReceived, ReplyRequested
from events.msg_get import stored_messages
from events.parking import PARKED_BUCKET
from events.personal import ERASED, CustomerKeys, clear_personal_fields
from events.store import Append, ConcurrencyError, EventStore
from events.streams import IDEMPOTENCY_BUCKET
from services.customers.erase_inbound import erase_inbound
from services.customers.erase_job import ErasureJobs
from services.customers.erase_match import Family, FamilyMatcher, chat_frames_of
from services.customers.erase_report import ErasureReport, ErasureTargets
from services.customers.facts import CustomerFacts
from services.customers.scan import erase_msg, scan
from services.customers.service import CONFLICT_RETRIES, CustomerError, Customers, check_customer_id
from services.identity import ERASED_PREFIX, HASHED_PREFIX, MERGED_PREFIX
from services.identity.addresses import InvalidAddress, identity_for

log = structlog.get_logger(__name__)

DELIVERIES_BUCKET = "rd_deliveries"  # services.delivery.records.BUCKET (not imported: it pulls in delivery)

Progress = Callable[[str], None]
# A reply's file as ReplyRequested names it (services.api.uploads: OBJECT_PREFIX + "up_<hex>";
# not imported: it pulls in the API).
_UPLOAD_URL = re.compile(r"^nats-object://([A-Za-z0-9_-]+)/(up_[0-9a-f]{32})$")


class _FamilyGrew(Exception):
    """A customer was merged into the family after the erasure read it (before its end)."""


def _readable(identity: str) -> bool:
    return bool(identity) and ERASED not in identity


class Eraser:
    def __init__(
        self,
        customers: Customers,
        keys: CustomerKeys,
        targets: ErasureTargets | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.customers = customers
        self.keys = keys
        self.targets = targets or ErasureTargets()
        self.progress = progress or (lambda _line: None)
        self.js = customers.store.js
        self.jobs = ErasureJobs(customers.directory, keys)

    async def erase(self, customer_id: str, reason: str, actor: str) -> ErasureReport:
        """Erase ``customer_id``'s family (see the module docstring). Raises ``CustomerError``:
        400 without a reason or for a malformed id, 404 for an unknown customer."""
        check_customer_id(customer_id)
        if not reason.strip():
            raise CustomerError(400, "an erasure needs a reason (who asked, the request's reference)")
        if not (await self.customers.facts(customer_id)).exists:
            raise CustomerError(404, f"no customer {customer_id}")
        survivor = await self.customers.survivor(customer_id)
        for _ in range(CONFLICT_RETRIES):
            family_facts = await self.customers.family(survivor)
            # Before the first step: a merge racing this erasure no longer points addresses at
            # the family (it checks the mark after pointing them, and takes them back).
            for facts in family_facts:
                await self.customers.directory.mark_erased(facts.customer_id)
            report = ErasureReport(
                requested=customer_id,
                customer_id=survivor,
                erased_ids=[f.customer_id for f in family_facts],
                already_erased=family_facts[0].erased,
            )
            try:
                return await self._erase_family(report, family_facts, reason, actor)
            except _FamilyGrew:
                # A merge into the family was written while this ran: erase again, with its customer.
                log.info("customers.erasure_family_grew", customer_id=survivor)
        raise CustomerError(409, "customers kept being merged into this one; run the erasure again")

    async def _erase_family(
        self, report: ErasureReport, family_facts: list[CustomerFacts], reason: str, actor: str
    ) -> ErasureReport:
        survivor, customer_id = report.customer_id, report.requested
        bound = log.bind(customer_id=survivor, requested=customer_id, family=len(report.erased_ids))
        self.progress(f"erasing {survivor} and {len(report.erased_ids) - 1} merged customers")
        family, in_clear = await self._gather(family_facts)
        # Recorded before anything is erased, the addresses sealed: a run that dies after the
        # keys went (they no longer read on the log) is finished by a retry or the API's resume.
        await self.jobs.begin(family, survivor, customer_id, reason, actor)
        self.progress(f"read the log: {len(family.identities)} addresses, {len(family.provider_ids)} messages")
        report.identity_mappings = await self._identity_mappings(family)
        self.progress(f"identity mappings erased: {report.identity_mappings}")
        report.chat_frames = await self._chat(family)
        self.progress(f"web chat history frames erased: {report.chat_frames}")
        inbound = await erase_inbound(self.js, self._matcher(family), self.targets.attachment_bucket)
        family.attachments |= inbound.attachments
        report.inbound_messages = inbound.erased
        self.progress(f"raw messages erased from {subjects.INBOUND_STREAM}: {report.inbound_messages}")
        report.attachments = await erase_attachments(self.js, family.attachments)
        self.progress(f"attachments erased: {report.attachments}")
        report.reply_files = await erase_attachments(self.js, family.uploads)
        self.progress(f"files sent in replies erased: {report.reply_files}")
        report.delivery_records = await self._deliveries(family)
        self.progress(f"delivery records, dead letters, kept API answers purged: {report.delivery_records}")
        report.conversations_resolved = await self._resolve_open(family, actor)
        self.progress(f"open conversations resolved: {report.conversations_resolved}")
        # After the resolutions (a resolved conversation takes no new reply), before the keys
        # (a reply queued meanwhile could still be sealed; none can after).
        report.queued_replies = await self._queued_replies(family)
        self.progress(f"replies still queued erased from {subjects.OUTBOUND_STREAM}: {report.queued_replies}")
        for member in family.ids:
            report.keys_destroyed += await self.keys.destroy(member)
        self.progress(f"data keys destroyed: {report.keys_destroyed}")
        report.seq = await self._record(survivor, family.ids, reason, actor)
        # A conversation opened on the family while this ran (an intake that had resolved the
        # sender before the addresses went, and sealed with a key read before it was destroyed)
        # stayed open and was offered to an agent: resolved too. Intake records nothing more
        # on the family once it reads CustomerErased.
        late = await self._recorded_since(family)
        if late.open_conversations:
            bound.warning("customers.erasure_met_new_conversations", conversations=len(late.open_conversations))
            report.conversations_resolved += await self._resolve_open(late, actor)
        # What reached RD_INBOUND after step 4 read it: those conversations' messages, and any
        # other of the family's addresses (services.customers.erase_inbound).
        family.provider_ids |= late.provider_ids
        arrived = await erase_inbound(
            self.js, self._matcher(family), self.targets.attachment_bucket, after=inbound.read_to
        )
        arrived_files = await erase_attachments(self.js, arrived.attachments)
        report.inbound_messages += arrived.erased
        report.attachments += arrived_files
        self.progress(f"raw messages that arrived meanwhile erased from {subjects.INBOUND_STREAM}: {arrived.erased}")
        if arrived.erased:
            bound.warning(
                "customers.erasure_met_new_inbound",
                messages=arrived.erased,
                attachments=arrived_files,
                after_seq=inbound.read_to,
            )
        report.left_in_clear, report.left_in_clear_seqs = len(in_clear), sorted(in_clear)[:20]
        if report.left_in_clear:
            bound.warning(
                "customers.erasure_left_clear_data",
                events=report.left_in_clear,
                first_seqs=report.left_in_clear_seqs,
                stream=subjects.EVENTS_STREAM,
                why="written in clear (before sealing, or with encrypt_personal_data = false)",
            )
        await self.jobs.finish(survivor)
        bound.info("customers.erased", **{k: v for k, v in report.to_json().items() if isinstance(v, int)})
        return report

    # -- 1. what the log says ---------------------------------------------------------------

    async def _gather(self, facts: Iterable[CustomerFacts]) -> tuple[Family, list[int]]:
        """The family's targets, and the sequences of its events whose personal data is in clear
        (no key destroyed makes them unreadable): one read of the log, as stored, then opened."""
        facts = list(facts)
        family = Family(ids=[f.customer_id for f in facts])
        family.identities = {i for f in facts for i in f.identities if _readable(i)}
        family.unlinked = {i for f in facts for i in f.unlinked if _readable(i)} - family.identities
        bucket = self.targets.attachment_bucket
        store = self.customers.store
        as_stored = EventStore(store.nc, store.js, reader=store.reader, quarantine=store.quarantine)
        in_clear: list[int] = []
        for member in family.ids:
            raw = await as_stored.read_customer(member)
            family.read_to = max([family.read_to, *(stored.seq for stored in raw)])
            in_clear += [stored.seq for stored in raw if clear_personal_fields(stored.event)]
            for stored in await store.opened_all(raw):
                event = stored.event
                family.note(event)
                if isinstance(event, MessageReceived):
                    for a in event.attachments:
                        if ref := attachment_ref(a.url, a.sha256, bucket):
                            family.attachments.add(ref)
                elif isinstance(event, ReplyRequested):
                    for a in event.attachments:  # the url stays clear (only the text is sealed)
                        if a.url and (m := _UPLOAD_URL.match(a.url)):
                            family.uploads.add((m.group(1), m.group(2)))
                elif isinstance(event, ConversationOpened):
                    family.open_conversations[event.conversation_id] = event.customer_id
                elif isinstance(event, ConversationResolved):
                    family.open_conversations.pop(event.conversation_id, None)
        return family, in_clear

    # -- 2. rd_identity ---------------------------------------------------------------------

    async def _identity_mappings(self, family: Family) -> int:
        directory = self.customers.directory
        erased = 0
        for identity in sorted(family.identities):
            erased += await directory.forget(identity)
        # Whatever else still points at the family (an address the log no longer shows in clear,
        # after an interrupted erasure): found by its value, a customer id.
        bucket = directory.bucket
        async for msg in scan(self.js, f"KV_{bucket}", f"$KV.{bucket}.>", last_per_subject=True):
            key = msg.subject.removeprefix(f"$KV.{bucket}.")
            if key.startswith((MERGED_PREFIX, ERASED_PREFIX)) or not msg.data:
                continue
            if msg.data.decode(errors="replace") in family.ids:
                erased += await directory.drop_key(key)
                if not key.startswith(HASHED_PREFIX):
                    log.warning(
                        "customers.erase_legacy_identity_key", hint="run relaydesk customers migrate-identities"
                    )
        return erased

    # -- 3. RD_CHAT -------------------------------------------------------------------------

    async def _chat(self, family: Family) -> int:
        history = ChatHistory(stream=self.targets.chat_stream, prefix=self.targets.chat_subject, js=self.js)
        erased = 0
        for identity in sorted(family.identities):
            kind, _, address = identity.partition(":")
            if kind == "chat" and address:
                erased += await history.erase(address)
        # An address taken away from the family holds its next owner's frames too: only the
        # family's go (its messages, its replies, its conversations' "closed" notices).
        for identity in sorted(family.unlinked):
            kind, _, address = identity.partition(":")
            if kind == "chat" and address:
                erased += await history.erase(address, only=chat_frames_of(family, address))
        return erased

    # -- 4. RD_INBOUND ----------------------------------------------------------------------

    def _sender_identity(self, channel: str, sender: str, platform: str | None) -> str | None:
        try:
            return identity_for(channel, sender, platform=platform, rules=self.customers.directory.rules)
        except InvalidAddress:
            return None

    def _matcher(self, family: Family) -> FamilyMatcher:
        return FamilyMatcher(family, self._sender_identity, self.targets.attachment_bucket)

    # -- 5. rd_deliveries -------------------------------------------------------------------

    async def _deliveries(self, family: Family) -> int:
        """Delivery records (a notice quotes the first lines), parked messages (a dead letter
        holds the raw payload; an unparseable mail's raw bytes go with it) and kept API answers
        of the family: purged (KV buckets deny message deletes)."""
        matcher = self._matcher(family)
        purged = 0
        for bucket in (DELIVERIES_BUCKET, PARKED_BUCKET, IDEMPOTENCY_BUCKET):
            kv = None
            async for msg in scan(self.js, f"KV_{bucket}", f"$KV.{bucket}.>", last_per_subject=True):
                if not msg.data:
                    continue
                concerned, objects = matcher.record(msg.data)
                if not concerned:
                    continue
                kv = kv or await self.js.key_value(bucket)
                await kv.purge(msg.subject.removeprefix(f"$KV.{bucket}."))
                await erase_attachments(self.js, objects)
                purged += 1
        return purged

    # -- 6. open conversations --------------------------------------------------------------

    async def _resolve_open(self, family: Family, actor: str) -> int:
        store = self.customers.store
        # Read as stored (only the kinds of events count): another erasure may have destroyed the keys.
        as_stored = EventStore(store.nc, store.js, reader=store.reader, quarantine=store.quarantine)
        resolved = 0
        for conversation_id, owner in sorted(family.open_conversations.items()):
            subject = subjects.conversation(owner, conversation_id)
            event = ConversationResolved(
                at=self.customers.clock(), customer_id=owner, conversation_id=conversation_id, actor=actor, erased=True
            )
            for _ in range(CONFLICT_RETRIES):
                # Resolved meanwhile (another erasure of the family running at once, an agent):
                # nothing to add. Decided on what was read, appended guarded by its end.
                events = await as_stored.read_direct(subject)
                if any(isinstance(s.event, ConversationResolved) for s in events):
                    break
                try:
                    await store.append(Append(event, expected=events[-1].seq if events else 0))
                except ConcurrencyError:
                    continue
                resolved += 1
                break
            else:
                log.warning("customers.erase_conversation_left_open", conversation_id=conversation_id)
        return resolved

    async def _recorded_since(self, family: Family) -> Family:
        """What was recorded on the family since ``_gather`` read its log: the conversations
        opened and open still, the provider ids of the messages received. Only what came after
        ``family.read_to`` is read, as stored (the keys are destroyed: ids and kinds count)."""
        store = self.customers.store
        as_stored = EventStore(store.nc, store.js, reader=store.reader, quarantine=store.quarantine)
        late = Family(ids=family.ids)
        for member in family.ids:
            for stored in await as_stored.read(subjects.customer_filter(member), from_seq=family.read_to + 1):
                event = stored.event
                if isinstance(event, ConversationOpened):
                    late.open_conversations[event.conversation_id] = event.customer_id
                elif isinstance(event, ConversationResolved):
                    late.open_conversations.pop(event.conversation_id, None)
                elif isinstance(event, MessageReceived):  # the provider id stays clear
                    late.provider_ids.add(f"{event.channel}:{event.provider_message_id}")
        return late

    async def _queued_replies(self, family: Family) -> int:
        """Replies still waiting in ``RD_OUTBOUND`` for the family: a connector that kept the
        customer's key cached (connectors do not read the log) would otherwise send one after
        the erasure, on a retry. A send already under way when this runs still goes out."""
        stream = subjects.OUTBOUND_STREAM
        matcher = self._matcher(family)
        erased = 0
        async for seq, data in stored_messages(self.js, stream, subjects.OUTBOUND_ALL):
            if matcher.inbound(data) is not None:
                erased += await erase_msg(self.js, stream, seq)
        return erased

    # -- 8. the fact --------------------------------------------------------------------------

    async def _record(self, survivor: str, ids: list[str], reason: str, actor: str) -> int | None:
        merged = tuple(i for i in ids if i != survivor)
        for _ in range(CONFLICT_RETRIES):
            facts = await self.customers.facts(survivor)
            if facts.erased:
                return None
            if not set(facts.merged) <= set(ids):
                raise _FamilyGrew
            event = CustomerErased(
                at=self.customers.clock(), customer_id=survivor, reason=reason, actor=actor, merged_ids=merged
            )
            try:
                return await self.customers.append(event, facts.last_seq)
            except ConcurrencyError:
                continue
        raise CustomerError(409, "the customer kept changing; run the erasure again")
