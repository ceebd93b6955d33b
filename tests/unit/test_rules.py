"""Routing rules: text patterns and recipient addresses become required skills."""

from __future__ import annotations

from services.config import RoutingRule
from services.intake.rules import RoutingRules

RULES = RoutingRules(
    [
        RoutingRule(pattern=r"refund|invoice", skills={"billing": 2}, priority=1),
        RoutingRule(recipients=("billing@*",), skills={"billing": 1}),
        RoutingRule(pattern=r"outage", skills={"technical": 3}, channels=("email",)),
        RoutingRule(),  # no condition: ignored rather than matching everything
    ],
    default_skills={"general": 1},
)


def test_text_pattern_gives_skills_and_priority() -> None:
    m = RULES.match("I want a REFUND", "sms")
    assert m.skills == {"billing": 2}
    assert m.priority == 1


def test_recipient_glob_maps_the_address_written_to() -> None:
    assert RULES.match("hello", "email", recipient="Billing@Example.com").skills == {"billing": 1}
    assert RULES.match("hello", "email", recipient="sales@example.com").skills == {"general": 1}


def test_channel_limited_rule_and_default_skills() -> None:
    assert RULES.match("big outage", "email").skills == {"technical": 3}
    assert RULES.match("big outage", "sms").skills == {"general": 1}
