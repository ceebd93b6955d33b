"""The raw provider messages of an erasure's family in ``RD_INBOUND`` (``services.customers.erase``,
step 4, and again after ``CustomerErased``).

A connector writes every message it is handed to ``RD_INBOUND`` (before intake reads it), and the
stream keeps it until retention. Step 4 reads the stream once, to its end as it stood then: a
message written after that read ended was never looked at. Two kinds come then, and both held
the customer's words in clear until retention: one a customer of the family sent while the
erasure ran, and the first message of a conversation intake opened on the family meanwhile
(it had resolved the sender before the addresses went; the erasure resolves that conversation
after ``CustomerErased``). So once ``CustomerErased`` is written (intake records nothing on the
family after it), the stream is read again, only after where the first read ended
(``InboundPass.read_to``), matching the family's addresses, ids and provider message ids, with
those of the messages recorded on the family meanwhile added.

A read that times out ends there (``events.stream_scan``): a second pass starts after the last
sequence the first gave, and a retry after a crash reads the stream whole again: a late
conversation's messages are found by their provider ids (on the family's log, in clear), and
those from the family's addresses by the addresses the erasure recorded before the keys went
(``services.customers.erase_job``: they no longer read on the log after).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext

from events import subjects
from services.customers.erase_match import FamilyMatcher, attachment_refs
from services.customers.scan import erase_msg, scan


@dataclass
class InboundPass:
    """What one read of ``RD_INBOUND`` erased, and where it ended."""

    read_to: int = 0  # the last stream sequence read (the next read starts after it)
    erased: int = 0
    attachments: set[tuple[str, str]] = field(default_factory=set)  # (bucket, object) the messages name


async def erase_inbound(
    js: JetStreamContext, matcher: FamilyMatcher, attachment_bucket: str, *, after: int = 0
) -> InboundPass:
    """Securely erase the messages of ``RD_INBOUND`` after sequence ``after`` (0: all) that
    ``matcher`` says are the family's; the attachments they name are returned, not erased."""
    stream = subjects.INBOUND_STREAM
    done = InboundPass(read_to=after)
    async for msg in scan(js, stream, subjects.INBOUND_ALL, after=after):
        seq = msg.metadata.sequence.stream
        done.read_to = max(done.read_to, seq)
        item = matcher.inbound(msg.data)
        if item is None:
            continue
        done.attachments.update(attachment_refs(item.attachments, attachment_bucket))
        done.erased += await erase_msg(js, stream, seq)
    return done
