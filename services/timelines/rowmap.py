"""Row <-> struct mapping, shared by the backends: the column lists and the tuples they hold.

Both backends store the same columns in the same order; they differ only in how a timestamp
and a JSON value are stored (SQLite: ISO-8601 text and JSON text; PostgreSQL: ``timestamptz``
and ``jsonb``). ``RowCodec`` maps rows with the PostgreSQL values; a backend overrides the
value hooks where it stores something else (``times_out`` does a batch at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.timelines.rows import ConversationSummary, CustomerSummary, TimelineEntry, utc

ENTRY_COLUMNS = (
    "customer_id, seq, conversation_id, at, kind, channel, direction, agent_id, message_id, text, reason, detail"
)
SUMMARY_COLUMNS = (
    "conversation_id, customer_id, channel, status, agent_id, opened_at, last_activity_at, resolved_at,"
    " transfer_count, message_count, last_reason, last_seq,"
    " priority, sla_due, first_assigned_at, first_response_at, offers_declined, offers_expired"
)
CUSTOMER_COLUMNS = (
    "customer_id, identities, tier, flags, preferred_language, crm_id, created_at, last_activity_at,"
    " conversation_count, last_seq, search, erased"
)
LINK_COLUMNS = "merged_id, survivor_id, seq"
# What the fold reads and writes of a summary: the columns readers see, and the digests of the
# events folded into it (``ConversationSummary.folded``), which readers have no use for.
FOLD_SUMMARY_COLUMNS = SUMMARY_COLUMNS + ", folded"


_times = msgspec.json.Encoder()
_texts = msgspec.json.Decoder(list[str | None])


def iso_many(values: Sequence[datetime | None]) -> list[str | None]:
    """``codec.iso`` of each value (ISO-8601 in UTC, None stays None) in one C pass: a rebuild
    writes several timestamps an event, and ``datetime.isoformat`` costs ~1 us each. msgspec
    writes UTC as ``Z`` where ``isoformat`` writes ``+00:00``, and the same digits otherwise
    (seconds always, microseconds as six digits when there are any)."""
    # ``Z"`` stands only at the end of a time in that array: one replace over the whole of it
    # instead of slicing and joining each text.
    encoded = _times.encode([v if v is None or v.tzinfo is UTC else utc(v) for v in values])
    return _texts.decode(encoded.replace(b'Z"', b'+00:00"'))


_sorted_json = msgspec.json.Encoder(order="sorted").encode  # ``codec.dump_json``'s encoding


def text_entry_rows(entries: Iterable[TimelineEntry]) -> list[tuple[Any, ...]]:
    """``RowCodec.entry_rows`` for a backend that stores times as ISO-8601 text (``iso_many``)
    and JSON as text (``codec.dump_json``) and free text as it is (SQLite), with those hooks
    written in: a rebuild makes one row an event, and three method calls a row cost more than
    the tuple."""
    entries = list(entries)
    ats = iso_many([e.at for e in entries])
    js = _sorted_json
    return [
        (
            e.customer_id,
            e.seq,
            e.conversation_id,
            at,
            e.kind,
            e.channel,
            e.direction,
            e.agent_id,
            e.message_id,
            e.text,
            None if (reason := e.reason) is None else js(reason).decode(),
            None if (detail := e.detail) is None else js(detail).decode(),
        )
        for e, at in zip(entries, ats, strict=True)
    ]


def column_names(columns: str) -> list[str]:
    return columns.replace(" ", "").split(",")


class RowCodec:
    """Structs to row tuples and back, in the column order above."""

    # -- value hooks ------------------------------------------------------------------

    def time_out(self, value: datetime | None) -> Any:
        return value

    def times_out(self, values: Sequence[datetime | None]) -> list[Any]:
        """``time_out`` of each (a backend may do them in one pass)."""
        return [self.time_out(v) for v in values]

    def json_out(self, value: dict[str, Any] | list[Any] | None) -> Any:
        return value

    def text_out(self, value: str | None) -> str | None:
        """Free text as the backend stores it (a customer's words, names, a CRM id)."""
        return value

    def time_in(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)

    def dict_in(self, value: Any) -> dict[str, Any] | None:
        return value  # type: ignore[no-any-return]

    def list_in(self, value: Any) -> list[str]:
        return list(value)

    def _required_time(self, value: Any) -> datetime:
        out = self.time_in(value)
        assert out is not None
        return out

    # -- timeline entries ---------------------------------------------------------------

    def entry_row(self, e: TimelineEntry) -> tuple[Any, ...]:
        return self.entry_rows((e,))[0]

    def entry_rows(self, entries: Iterable[TimelineEntry]) -> list[tuple[Any, ...]]:
        # A batch's timestamps go through ``times_out`` together: a rebuild makes one row an event.
        entries = list(entries)
        ats = self.times_out([e.at for e in entries])
        j, t = self.json_out, self.text_out
        return [
            (
                e.customer_id,
                e.seq,
                e.conversation_id,
                at,
                e.kind,
                e.channel,
                e.direction,
                e.agent_id,
                e.message_id,
                t(e.text),
                j(e.reason),
                j(e.detail),
            )
            for e, at in zip(entries, ats, strict=True)
        ]

    def row_entry(self, r: Sequence[Any]) -> TimelineEntry:
        return TimelineEntry(
            customer_id=r[0],
            seq=int(r[1]),
            conversation_id=r[2],
            at=self._required_time(r[3]),
            kind=r[4],
            channel=r[5],
            direction=r[6],
            agent_id=r[7],
            message_id=r[8],
            text=r[9],
            reason=self.dict_in(r[10]),
            detail=self.dict_in(r[11]),
        )

    # -- conversation summaries ---------------------------------------------------------

    def summary_row(self, s: ConversationSummary) -> tuple[Any, ...]:
        return self.summary_rows((s,))[0]

    def summary_rows(self, summaries: Iterable[ConversationSummary]) -> list[tuple[Any, ...]]:
        summaries = list(summaries)
        stamps = [
            t
            for s in summaries
            for t in (
                s.opened_at,
                s.last_activity_at,
                s.resolved_at,
                s.sla_due,
                s.first_assigned_at,
                s.first_response_at,
            )
        ]
        times = iter(self.times_out(stamps))
        j = self.json_out
        return [
            (
                s.conversation_id,
                s.customer_id,
                s.channel,
                s.status,
                s.agent_id,
                next(times),  # opened_at
                next(times),  # last_activity_at
                next(times),  # resolved_at
                s.transfer_count,
                s.message_count,
                j(s.last_reason),
                s.last_seq,
                s.priority,
                next(times),  # sla_due
                next(times),  # first_assigned_at
                next(times),  # first_response_at
                s.offers_declined,
                s.offers_expired,
                s.folded,
            )
            for s in summaries
        ]

    def row_summary(self, r: Sequence[Any]) -> ConversationSummary:
        t = self.time_in
        return ConversationSummary(
            conversation_id=r[0],
            customer_id=r[1],
            channel=r[2],
            status=r[3],
            agent_id=r[4],
            opened_at=t(r[5]),
            last_activity_at=self._required_time(r[6]),
            resolved_at=t(r[7]),
            transfer_count=int(r[8]),
            message_count=int(r[9]),
            last_reason=self.dict_in(r[10]),
            last_seq=int(r[11]),
            priority=int(r[12]),
            sla_due=t(r[13]),
            first_assigned_at=t(r[14]),
            first_response_at=t(r[15]),
            offers_declined=int(r[16]),
            offers_expired=int(r[17]),
            folded=bytes(r[18]) if len(r) > 18 and r[18] is not None else b"",
        )

    # -- customer summaries -------------------------------------------------------------

    def customer_row(self, u: CustomerSummary) -> tuple[Any, ...]:
        return (
            u.customer_id,
            self.json_out(u.identities),
            u.tier,
            self.json_out(u.flags),
            u.preferred_language,
            self.text_out(u.crm_id),
            self.time_out(u.created_at),
            self.time_out(u.last_activity_at),
            u.conversation_count,
            u.last_seq,
            self.text_out(u.search_text()),
            u.erased,
        )

    def row_customer(self, r: Sequence[Any]) -> CustomerSummary:
        return CustomerSummary(
            customer_id=r[0],
            identities=self.list_in(r[1]),
            tier=r[2],
            flags=self.list_in(r[3]),
            preferred_language=r[4],
            crm_id=r[5],
            created_at=self.time_in(r[6]),
            last_activity_at=self.time_in(r[7]),
            conversation_count=int(r[8]),
            last_seq=int(r[9]),
            erased=bool(r[11]),
        )
