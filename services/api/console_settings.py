"""``[console]`` settings: what the agent console's workspace shows beside the routing facts.

Kept free of the API's imports so ``services.config`` can read it: canned replies (with their
placeholders checked when the configuration loads) and the CRM link of the customer panel.
"""

from __future__ import annotations

import re

import msgspec

# The placeholders a canned reply may use, filled for one conversation (services.api.canned).
PLACEHOLDERS: tuple[str, ...] = ("customer.name", "agent.name", "conversation.id")
# ``{name}`` in a text; ``{{`` and ``}}`` stand for literal braces.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class CannedReply(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: str
    title: str
    text: str


class ConsoleSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Replies an agent picks from in the console: ``[[console.canned_replies]]`` id, title, text.
    canned_replies: tuple[CannedReply, ...] = ()
    # The customer panel's CRM link, e.g. "https://crm.example.com/c/{crm_id}" ("" : no link).
    crm_url_template: str = ""


def placeholders_in(text: str) -> list[str]:
    """The placeholder names ``text`` uses, in order (``{{``/``}}`` are literal braces)."""
    return [m.group(1) for m in PLACEHOLDER.finditer(text) if m.group(1) is not None]


def console_problems(settings: ConsoleSettings) -> list[str]:
    """Mistakes in ``[console]``, one line each, naming the reply and the placeholder."""
    problems: list[str] = []
    seen: set[str] = set()
    for n, reply in enumerate(settings.canned_replies, 1):
        label = f"[[console.canned_replies]] #{n} ({reply.id or 'no id'})"
        if not reply.id.strip():
            problems.append(f"{label}: id is empty")
        elif reply.id in seen:
            problems.append(f"{label}: id {reply.id!r} is used twice")
        seen.add(reply.id)
        if not reply.text.strip():
            problems.append(f"{label}: text is empty")
        for name in placeholders_in(reply.text):
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                problems.append(f"{label}: unknown placeholder {{{name}}} (known: {known}; {{{{ is a brace)")
    template = settings.crm_url_template
    if template:
        names = placeholders_in(template)
        if not template.startswith(("http://", "https://")):
            problems.append("[console] crm_url_template: must start with http:// or https://")
        if set(names) != {"crm_id"}:
            found = ", ".join(names) or "none"
            problems.append(f"[console] crm_url_template: use the placeholder {{crm_id}} only (found: {found})")
    return problems
