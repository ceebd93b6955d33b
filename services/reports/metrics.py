"""Service figures from the folded facts: pure, given the window, the policy and "now".

Definitions (durations in seconds; days and hours in the query's ``tz``, UTC by default):

* **first response time**: the customer's first message (``MessageReceived.at``) to the first
  agent reply after it (``ReplyRequested`` or ``MessageSent``, whichever is first). In a
  conversation an agent opened (outbound), her opening message is not a response: the reply
  to the customer's answer is; without an answer there is none.
* **time to assign** (also the *wait* in the hourly series): the first ``RoutingRequested`` to
  the first ``ConversationAssigned`` or ``OfferAccepted``.
* **handle time**: first assignment to resolution (not for a conversation ended by the
  customer's erasure, whose resolution served nobody).
* **resolved**: closed after an agent took it (or opened it), not by an erasure. **Abandoned**:
  closed before any agent took it (the customer left, or it was closed unanswered); abandon
  rate = abandoned / (resolved + abandoned). **Erased**: ended by the customer's erasure,
  counted apart. (Found by a team lead's audit: customers who left counted as resolved, and
  as first-contact resolutions.)
* **SLA attainment**: share of conversations assigned at or before their due time, the first
  routing request's ``requirements.sla_due`` or else routing time + ``[router] sla_seconds`` of
  the channel. Still waiting and past due counts as breached; still waiting and not yet due,
  or closed unassigned before the due time, is not counted either way.
* **reopen**: a resolved conversation is *reopened* when the same customer opens a new
  conversation on the same channel within ``reopen_hours`` (default 24) of its resolution.
  Reopen rate = reopened / resolved.
* **first-contact resolution**: resolved with no transfer, no escalation and not reopened;
  rate = FCR / resolved. A conversation an agent opens herself after a resolution is her
  follow-up, not the customer's reopen.
* **offer decline / expiry rate**: declined (expired) offers / offers answered (accepted,
  declined or expired; offers withdrawn by a transfer or still pending are not answered).

Grouping: a conversation belongs to the window, day and hour (in ``tz``) of its opening and to the
agent who first took it (``(unassigned)`` if nobody did yet), its channel, its queue
(channel and required skills at first routing) and its customer's tier (``platinum``,
``gold``…, ``standard`` unless the profile says otherwise: the routing policy's customer tier,
as of the first routing request, or the opening of one never routed; ``tier`` groups work by the
customers it serves, an agent's own tier shows through ``agent``). An offer belongs to the day
it was made, the agent it was made to, and its conversation's channel, queue and tier. The sums per group, per hour
and for the window are ``services.reports.buckets``.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import structlog

from events.skips import count_skip
from services.reports.buckets import Bucket, hour_json
from services.reports.conversation_figures import ConversationFigures, figures
from services.reports.fold import DEFAULT_TIER, ConversationFacts, OfferFact, ReportState

GROUP_BYS = ("channel", "agent", "queue", "tier", "day", "conversation")
DEFAULT_REOPEN_HOURS = 24.0
UNASSIGNED = "(unassigned)"
NOT_ROUTED = "(not routed)"
SKIP_WHERE = "report_figures"
"""``relaydesk_skipped_total{where}`` of a conversation whose figures could not be computed."""

log = structlog.get_logger("relaydesk.reports")


@dataclass(frozen=True)
class ReportQuery:
    start: datetime  # inclusive
    end: datetime  # exclusive
    group_by: str | None = None
    reopen_hours: float = DEFAULT_REOPEN_HOURS
    # The IANA time zone whose days and hours the report counts in (``group_by=day``,
    # ``by_hour``, a plain date as ``from``/``to``): a team's own day, not UTC's.
    tz: str = "UTC"

    @property
    def zone(self) -> tzinfo:
        return zone(self.tz)


@functools.lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (``UTC`` or an IANA name); raises ``ValueError`` for a
    name the time zone database does not hold."""
    if name == "UTC":
        return UTC
    if name not in _iana_names():
        # ZoneInfo opens any file of the database: ``localtime`` (the API host's own zone, whose
        # days the report then labels "localtime") and ``right/…`` (leap-second files ZoneInfo
        # misreads: 2026-10-26 00:00Z read 02:00+02:00 in right/Europe/Berlin, an hour off) were
        # taken (found by the manager's-numbers audit).
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    # ZoneInfoNotFoundError is a KeyError; a folder of the database (``America``, ``Etc``) is an
    # IsADirectoryError, an OSError (found by a security audit: a 500 with a traceback each time).
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"unknown time zone {name!r}") from err


@functools.lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    """The zones the database lists (read once: ~600 names, ~40 ms), less the host's own."""
    return frozenset(available_timezones() - {"localtime"})


def conversation_key(group_by: str, tz: tzinfo = UTC) -> Callable[[ConversationFacts], str]:
    def key(conv: ConversationFacts) -> str:
        match group_by:
            case "channel":
                return conv.channel or "unknown"
            case "agent":
                return conv.first_agent or UNASSIGNED
            case "queue":
                return conv.queue or NOT_ROUTED
            case "tier":
                return conv.customer_tier or DEFAULT_TIER
            case "day":
                return conv.day_at.astimezone(tz).date().isoformat() if conv.day_at else "unknown"
        return conv.conversation_id

    return key


def offer_key(
    group_by: str, tz: tzinfo = UTC, conversations: Mapping[str, ConversationFacts] | None = None
) -> Callable[[OfferFact], str]:
    """``conversations``: the fold's, for ``tier`` (an offer's is its conversation's, read when
    reporting: an offer made before the routing request counts with the tier set at it)."""

    def key(offer: OfferFact) -> str:
        match group_by:
            case "channel":
                return offer.channel or "unknown"
            case "agent":
                return offer.agent_id
            case "queue":
                return offer.queue or NOT_ROUTED
            case "tier":
                conv = (conversations or {}).get(offer.conversation_id)
                return (conv.customer_tier if conv else None) or DEFAULT_TIER
            case "day":
                return offer.offered_at.astimezone(tz).date().isoformat()
        return offer.conversation_id

    return key


def in_window(conversations: Iterable[ConversationFacts], start: datetime, end: datetime) -> list[ConversationFacts]:
    return [c for c in conversations if c.day_at is not None and start <= c.day_at < end]


@dataclass(frozen=True)
class GroupPage:
    """Which of a report's groups to answer: those after ``after`` in key order, at most
    ``limit`` (None: all of them); ``totals``: the window's total and hourly series too.

    Found by a scale audit: ``group_by=conversation`` answered a group per conversation, 54 MB
    and 3.5 s at 100,000 conversations. A page builds the buckets of its own groups only, and
    a page after the first (``totals`` False) computes the figures of its own conversations
    only."""

    after: str | None = None
    limit: int | None = None
    totals: bool = True


@dataclass(frozen=True)
class GroupIndex:
    """A window's conversations and offers, each also in the order of its group's key (the
    facts themselves, which the fold updates in place), and the keys of the groups in order.
    A page finds its groups' conversations and offers by bisecting, without a pass over the
    window: ``services.api.reports`` keeps the first page's index for the pages after it.
    Lists of the facts, no container per group: 100,000 small lists cost more in garbage
    collection than the pass they save."""

    conversations: list[ConversationFacts]
    offers: list[OfferFact]
    keys: list[str]  # the groups' keys, sorted
    conversation_keys: list[str]  # sorted; conversation_keys[i] is the key of grouped_conversations[i]
    grouped_conversations: list[ConversationFacts]
    offer_keys: list[str]  # sorted, as above
    grouped_offers: list[OfferFact]


def _by_key(items: list[Any], key: Callable[[Any], str]) -> tuple[list[str], list[Any]]:
    keys = [key(item) for item in items]
    order = sorted(range(len(items)), key=keys.__getitem__)
    return [keys[i] for i in order], [items[i] for i in order]


def group_index(state: ReportState, query: ReportQuery) -> GroupIndex:
    convs = in_window(state.conversations.values(), query.start, query.end)
    offers = [o for o in state.offers if query.start <= o.offered_at < query.end]
    if query.group_by is None:
        return GroupIndex(convs, offers, [], [], [], [], [])
    conv_keys, grouped_convs = _by_key(convs, conversation_key(query.group_by, query.zone))
    offer_keys, grouped_offers = _by_key(offers, offer_key(query.group_by, query.zone, state.conversations))
    keys = sorted(set(conv_keys).union(offer_keys))
    return GroupIndex(convs, offers, keys, conv_keys, grouped_convs, offer_keys, grouped_offers)


def _within(keys: list[str], items: list[Any], first: str, last: str) -> list[tuple[str, Any]]:
    """The items whose key (``keys``, sorted) is from ``first`` to ``last``."""
    lo, hi = bisect.bisect_left(keys, first), bisect.bisect_right(keys, last)
    return list(zip(keys[lo:hi], items[lo:hi], strict=True))


def service_report(
    state: ReportState,
    query: ReportQuery,
    *,
    now: datetime,
    sla_seconds: Mapping[str, float],
    page: GroupPage | None = None,
    index: GroupIndex | None = None,
) -> dict[str, Any]:
    """The report as the API serves it: totals, one row per group (a page of them: ``page``),
    and the hourly series. ``total_groups``: the groups of the window; ``next_after``: the key
    the next page starts after (None: this page is the last). ``index``: the window's
    ``group_index`` (of this state and query) when the caller kept one."""
    if query.group_by is not None and query.group_by not in GROUP_BYS:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BYS)}")
    page = page or GroupPage()
    index = index or group_index(state, query)
    tz = query.zone
    first = 0 if page.after is None else bisect.bisect_right(index.keys, page.after)
    last = len(index.keys) if page.limit is None else min(first + page.limit, len(index.keys))
    shown = index.keys[first:last]

    def conversation_figures(conv: ConversationFacts) -> ConversationFigures | None:
        try:
            return figures(conv, now=now, sla_seconds=sla_seconds, reopen_hours=query.reopen_hours)
        except OverflowError as err:
            # One conversation whose times defeat the arithmetic must not cost the whole report
            # (a 500): its figures are left out, said and counted.
            log.warning("reports.conversation_skipped", conversation_id=conv.conversation_id, error=repr(err))
            count_skip(SKIP_WHERE)
            return None

    total = Bucket()
    hours = [Bucket() for _ in range(24)]
    computed: dict[str, ConversationFigures | None] = {}
    if page.totals:
        for conv in index.conversations:
            f = computed[conv.conversation_id] = conversation_figures(conv)
            if f is None:
                continue
            total.add(f)
            start = conv.routed_at or conv.day_at
            if start is not None:
                hours[start.astimezone(tz).hour].add(f)
        for offer in index.offers:
            total.add_offer(offer)
            hours[offer.offered_at.astimezone(tz).hour].add_offer(offer)
    groups: dict[str, Bucket] = {key: Bucket() for key in shown}
    if shown:
        for key, conv in _within(index.conversation_keys, index.grouped_conversations, shown[0], shown[-1]):
            cid = conv.conversation_id
            f = computed[cid] if cid in computed else conversation_figures(conv)
            if f is not None:
                groups[key].add(f)
        for key, offer in _within(index.offer_keys, index.grouped_offers, shown[0], shown[-1]):
            groups[key].add_offer(offer)
    # Not a group of one skipped conversation (the figures its times defeated).
    rows = [{"key": key, **b.json()} for key, b in groups.items() if b.conversations or b.offers]
    return {
        "from": query.start.astimezone(tz).isoformat(),
        "to": query.end.astimezone(tz).isoformat(),
        "tz": query.tz,
        "group_by": query.group_by,
        "reopen_hours": query.reopen_hours,
        "sla_seconds": {channel: sla_seconds[channel] for channel in sorted(sla_seconds)},
        "as_of_seq": state.last_seq,
        "generated_at": now.isoformat(),
        "total": total.json() if page.totals else None,
        "groups": rows,
        "count": len(rows),
        "total_groups": len(index.keys),
        "next_after": shown[-1] if last < len(index.keys) else None,
        "by_hour": [hour_json(hour, bucket) for hour, bucket in enumerate(hours)] if page.totals else None,
    }
