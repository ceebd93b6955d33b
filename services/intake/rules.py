"""Routing rules from config: keywords/regex in a message → required skills and priority."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.config import RoutingRule


@dataclass(frozen=True)
class RuleMatch:
    skills: dict[str, int]
    priority: int
    rules: tuple[int, ...]


class RoutingRules:
    def __init__(self, rules: Sequence[RoutingRule], default_skills: dict[str, int]) -> None:
        self._rules = [(re.compile(r.pattern, re.IGNORECASE) if r.pattern else None, r) for r in rules]
        self.default_skills = default_skills

    def match(self, text: str, channel: str, recipient: str = "") -> RuleMatch:
        """Skills and priority for a message. A rule matches when every condition it has
        holds: its pattern is found in the text, its recipient globs (``billing@*``) match
        the address written to, its channels include this one."""
        skills: dict[str, int] = {}
        priority = 0
        hits: list[int] = []
        for index, (pattern, rule) in enumerate(self._rules):
            if rule.channels and channel not in rule.channels:
                continue
            if pattern is None and not rule.recipients:
                continue  # a rule with no condition would match everything: ignore it
            if pattern is not None and not pattern.search(text):
                continue
            if rule.recipients and not any(
                fnmatch.fnmatchcase(recipient.casefold(), glob.casefold()) for glob in rule.recipients
            ):
                continue
            hits.append(index)
            priority = max(priority, rule.priority)
            for skill, level in rule.skills.items():
                skills[skill] = max(skills.get(skill, 0), level)
        return RuleMatch(skills=skills or dict(self.default_skills), priority=priority, rules=tuple(hits))
