"""`relaydesk status` names each queue so two rows never look alike: an operator saw
`sms billing en tier>=1 standard` three times (escalation steps 1, 2 and 3 of it)."""

from __future__ import annotations

from typing import Any

from services.status import _queue_name


def queue(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "channel": "sms",
        "skills": {"billing": 2},
        "language": "en",
        "languages": ["en"],
        "min_tier": 1,
        "customer_tier": "standard",
        "step": 0,
    }
    return {**base, **changes}


def test_queues_that_differ_by_step_level_or_accepted_languages_are_named_apart() -> None:
    rows = [
        queue(),
        queue(step=1),
        queue(step=3, skills={"billing": 1}),
        queue(language="es", languages=["es", "en"], step=2),
    ]
    names = [_queue_name(q) for q in rows]
    assert names == [
        "sms billing>=2 en tier>=1 standard",
        "sms billing>=2 en tier>=1 standard step 1",
        "sms billing>=1 en tier>=1 standard step 3",
        "sms billing>=2 es (or en) tier>=1 standard step 2",
    ]
