"""What an agent token may read after two customers were merged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from router.state import ConversationView, CustomerView, RouterState
from services.api.auth import agent_refusal


def deps_with(state: RouterState) -> Any:
    return SimpleNamespace(live=SimpleNamespace(state=state))


def test_an_agent_holding_a_merged_customers_conversation_reads_the_survivors_timeline() -> None:
    state = RouterState(
        customers={"cu_email": CustomerView(merged_into="cu_sms"), "cu_sms": CustomerView()},
        conversations={
            "cv1": ConversationView(customer_id="cu_email", channel="email", status="assigned", agent_id="ava")
        },
    )
    deps = deps_with(state)
    assert agent_refusal(deps, "ava", "GET", "/v1/customers/cu_email/timeline") is None
    assert agent_refusal(deps, "ava", "GET", "/v1/customers/cu_sms/timeline") is None
    assert agent_refusal(deps, "bruno", "GET", "/v1/customers/cu_sms/timeline") is not None
    assert agent_refusal(deps, "ava", "GET", "/v1/customers/cu_other/timeline") is not None
