"""Reports count a re-published event once (same content, later sequence: an operator's partial
restore, a replay tool run twice), and never route a resolved conversation again."""

from __future__ import annotations

from events.model import LogEvent
from services.reports import fold_all, service_report
from services.reports.fold import REPORT_FOLD_VERSION
from tests.reports.scenario import NOW, SLA, Conv, scenario
from tests.reports.test_report_audit import DAY, stored


def _total(events: list[LogEvent]) -> dict[str, object]:
    body = service_report(fold_all(stored(events)), DAY, now=NOW, sla_seconds=SLA)
    return dict(body["total"])


def test_the_whole_day_republished_changes_no_figure() -> None:
    day = scenario()
    assert _total([*day, *day]) == _total(day)


def test_a_resolved_conversation_republished_is_not_opened_offered_or_transferred_again() -> None:
    served = Conv("c1", "L", "chat").open(0).offer(10, "ava").accept(20, "ava").reply(30, "ava")
    served = served.transfer(40, "ava", "bruno").assign(50, "bruno").resolve(100, "bruno")
    state = fold_all(stored([*served.events, *served.events[:4]]))  # opened, routed, offered, accepted
    facts = state.conversations["L"]
    assert (facts.offers, facts.transfers, facts.first_agent, facts.agent_id) == (1, 1, "ava", "bruno")
    assert not facts.routable
    assert [offer.outcome for offer in state.offers] == ["accepted"]


def test_an_open_conversation_republished_counts_each_offer_and_transfer_once() -> None:
    open_ = Conv("c1", "L", "chat").open(0).offer(10, "ava").decline(15, "ava").offer(20, "bruno")
    events = [*open_.events, *open_.events[2:4]]  # ava's offer and decline, again
    facts = fold_all(stored(events)).conversations["L"]
    assert (facts.offers, facts.offers_declined) == (2, 1)
    assert fold_all(stored(events)).offers[-1].outcome == "pending"  # bruno's offer stands


def test_the_fold_version_says_the_facts_changed() -> None:
    assert REPORT_FOLD_VERSION >= 7
