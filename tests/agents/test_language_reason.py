"""``GET /v1/conversations/{id}`` shows why the conversation has its language: each piece of
evidence intake weighed (``language_reason``), read from the conversation's own log."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import AgentSystem, eventually

pytestmark = pytest.mark.integration


async def sms_conversation(s: AgentSystem, sid: str, sender: str, text: str) -> dict[str, Any]:
    assert await s.system.send_sms(sid, sender, text) == 200
    customer_id = await eventually(lambda: s.system.customer(sender))

    async def opened() -> dict[str, Any] | None:
        _, body = await s.call("GET", "/v1/conversations")
        found = [c for c in body["conversations"] if c["customer_id"] == customer_id]
        return found[0] if found else None

    return await eventually(opened)


async def test_the_readme_example_shows_text_and_phone_evidence(s: AgentSystem) -> None:
    conv = await sms_conversation(s, "SM" + "a" * 32, "+34600111222", "Hola, necesito un reembolso")
    status, body = await s.call("GET", f"/v1/conversations/{conv['id']}")
    assert status == 200, body
    assert body["requirements"]["language"] == "es"
    reason = body["language_reason"]
    evidence = {e["source"]: e["language"] for e in reason["evidence"]}
    assert evidence == {"text": "es", "phone": "es"}  # a Spanish number, Spanish words
    assert 0.6 <= reason["confidence"] <= 1.0


async def test_a_corrected_language_shows_the_correction_reason(s: AgentSystem) -> None:
    conv = await sms_conversation(s, "SM" + "b" * 32, "+15551230001", "ok")
    assert await s.system.send_sms("SM" + "c" * 32, "+15551230001", "Hola, necesito un reembolso de mi pedido") == 200

    async def corrected() -> dict[str, Any] | None:
        _, body = await s.call("GET", f"/v1/conversations/{conv['id']}")
        return body if body.get("requirements", {}).get("language") == "es" else None

    body = await eventually(corrected, timeout=20)
    # The reason of the correction (ConversationLanguageChanged), not the first message's.
    text = next(e for e in body["language_reason"]["evidence"] if e["source"] == "text")
    assert text["language"] == "es" and text["weight"] >= 0.9


async def test_a_conversation_without_a_recorded_reason_says_null(s: AgentSystem) -> None:
    _, cid = await s.open(language="es", text="hola")  # as events written before 2026-12
    body = await eventually(lambda: s.conversation(cid))
    assert body["language_reason"] is None
