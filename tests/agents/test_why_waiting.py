"""A team lead asks why work waits: ``GET /v1/conversations/{id}`` and ``GET /v1/queues``
name the eligible agents (total, online, with free capacity) and the first blocking
requirement, over the real system (every service on a nats-server of the test's own)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from events.model import ConversationOpened, Requirements, RoutingRequested
from events.store import Append
from router.policy import FALLBACK_LANGUAGE, EscalationStep
from services.bus.embedded import EmbeddedNats

from .helpers import AgentSystem, agent_system, agents_config, eventually

pytestmark = pytest.mark.integration

# Ava speaks English, Bruno Spanish (helpers.ROSTER); nobody speaks German. After this long
# the conversation accepts its fallback language, Spanish, and Bruno is offered it.
FALLBACK_AFTER_SECONDS = 6.0


async def open_german_with_spanish_fallback(s: AgentSystem) -> str:
    customer, conversation = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    seq = await s.store.append(
        Append(
            ConversationOpened(
                at=now, customer_id=customer, conversation_id=conversation, channel="sms", contact="+15550000000"
            ),
            expected=0,
        )
    )
    requirements = Requirements(skills={"billing": 1}, language="de", fallback_languages=("es",))
    await s.store.append(
        Append(
            RoutingRequested(
                at=now, customer_id=customer, conversation_id=conversation, channel="sms", requirements=requirements
            ),
            expected=seq,
        )
    )
    return conversation


async def test_a_german_conversation_nobody_speaks_says_so_with_counts(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    steps = (EscalationStep(after_seconds=FALLBACK_AFTER_SECONDS, relaxation=FALLBACK_LANGUAGE),)
    config.router = msgspec.structs.replace(config.router, escalation_steps=steps)
    async with agent_system(config, clean_nats) as s:
        cid = await open_german_with_spanish_fallback(s)

        conv = await eventually(lambda: s.conversation(cid, "waiting"))
        assert conv["waiting_because"] == {
            "eligible": {"total": 0, "online": 0, "with_free_capacity": 0},
            "blocking": "no agent speaks de",
        }
        status, body = await s.call("GET", "/v1/queues")
        assert status == 200, body
        [queue] = [q for q in body["queues"] if q["language"] == "de"]
        assert queue["waiting"] == 1
        assert queue["eligible"] == {"total": 0, "online": 0, "with_free_capacity": 0}
        assert queue["blocking"] == "no agent speaks de"

        # The fallback step lets Spanish in: Bruno is eligible and is offered it.
        conv = await eventually(lambda: s.conversation(cid, "offered"), timeout=FALLBACK_AFTER_SECONDS + 15)
        assert conv["agent_id"] == "bruno"
        because = conv["waiting_because"]
        assert because["eligible"]["total"] == 1 and because["eligible"]["online"] == 1
        assert because["blocking"].startswith("offered to bruno, expires ")

        status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", body={})
        assert status == 200, body
        conv = await eventually(lambda: s.conversation(cid, "assigned"))
        assert conv["waiting_because"] is None
