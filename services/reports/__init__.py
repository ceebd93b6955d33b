"""Service metrics as a projection of the event log (issue 5): see ``README.md`` here.

``fold`` (pure facts per conversation and offer), ``metrics`` (pure figures for a window and
grouping), ``buckets`` (pure sums per group, per hour and for the window, and how they read:
counts, rates, statistics), ``projection`` (the fold kept up to date from the log; report parameters),
``render`` (rich table and matplotlib chart for ``relaydesk report``).
"""

from services.reports.fold import REPORT_FOLD_VERSION, ConversationFacts, OfferFact, ReportState, evolve, fold_all
from services.reports.metrics import GROUP_BYS, GroupPage, ReportQuery, service_report
from services.reports.projection import BadQuery, ReportProjection, parse_query

__all__ = [
    "GROUP_BYS",
    "REPORT_FOLD_VERSION",
    "BadQuery",
    "ConversationFacts",
    "GroupPage",
    "OfferFact",
    "ReportProjection",
    "ReportQuery",
    "ReportState",
    "evolve",
    "fold_all",
    "parse_query",
    "service_report",
]
