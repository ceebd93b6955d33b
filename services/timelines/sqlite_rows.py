"""SQLite's rows: timestamps as ISO-8601 UTC text, JSON as text (``rowmap`` maps the rest)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from services.timelines.codec import dump_json, iso, load_json, parse_iso
from services.timelines.rowmap import RowCodec, iso_many
from services.timelines.rows import ConversationSummary, TimelineEntry


class SqliteRows(RowCodec):
    """Timestamps as ISO-8601 UTC text, JSON as text."""

    def time_out(self, value: Any) -> Any:
        return iso(value)

    def json_out(self, value: Any) -> Any:
        return dump_json(value)

    def time_in(self, value: Any) -> Any:
        return parse_iso(value)

    def dict_in(self, value: Any) -> Any:
        return load_json(value)

    def list_in(self, value: Any) -> Any:
        return msgspec.json.decode(value)

    def entry_rows(self, entries: Iterable[TimelineEntry]) -> list[tuple[Any, ...]]:
        # The hooks inlined, the timestamps done together: a rebuild makes one of these per event.
        entries = list(entries)
        ats = iso_many([e.at for e in entries])
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
                None if e.reason is None else dump_json(e.reason),
                None if e.detail is None else dump_json(e.detail),
            )
            for e, at in zip(entries, ats, strict=True)
        ]

    def entry_row(self, e: TimelineEntry) -> tuple[Any, ...]:
        return self.entry_rows([e])[0]

    def summary_rows(self, summaries: Iterable[ConversationSummary]) -> list[tuple[Any, ...]]:
        summaries = list(summaries)
        times = iter(
            iso_many(
                [
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
            )
        )
        return [
            (
                s.conversation_id,
                s.customer_id,
                s.channel,
                s.status,
                s.agent_id,
                next(times),
                next(times),
                next(times),
                s.transfer_count,
                s.message_count,
                None if s.last_reason is None else dump_json(s.last_reason),
                s.last_seq,
                s.priority,
                next(times),
                next(times),
                next(times),
                s.offers_declined,
                s.offers_expired,
            )
            for s in summaries
        ]


ROWS = SqliteRows()
