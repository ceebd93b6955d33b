"""The contact-centre scenario: voice beside chat and email. A call takes the agent whole
(capacity voice = 1 and the router's exclusive-channel rule), under every policy: no agent on a
call, or with a call reserved for her, is given other work; and the day is deterministic."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.simulator import arrivals as arrivals_
from services.simulator.engine import Engine
from services.simulator.policy import Assign, Offer
from services.simulator.runner import make_policy, run
from services.simulator.scenario import POLICIES, Scenario, load

SCENARIO = Path(__file__).parents[2] / "services" / "simulator" / "scenarios" / "contact_center.toml"


class CallWatcher(Engine):
    """The engine, noting every piece of work given to an agent who holds a call then."""

    def __init__(self, scenario: Scenario, policy: str) -> None:
        super().__init__(scenario, arrivals_.generate(scenario), make_policy(policy, scenario))
        self.calls_given = 0
        self.double_booked: list[tuple[float, str, str]] = []  # (when, agent, conversation)

    def _act(self, now: float, action: object) -> None:
        if isinstance(action, Offer | Assign):
            on_call = [
                c.arrival.conversation_id
                for c in self.conversations.values()
                if c.agent_id == action.agent_id
                and c.status in ("offered", "serving")
                and c.arrival.channel == "voice"
                and c.arrival.conversation_id != action.conversation_id
            ]
            if on_call:
                self.double_booked.append((now, action.agent_id, action.conversation_id))
            if self.conversations[action.conversation_id].arrival.channel == "voice":
                self.calls_given += 1
        super()._act(now, action)


def test_the_scenario_has_voice_chat_and_email_and_one_call_at_a_time() -> None:
    scenario = load(SCENARIO)
    assert set(scenario.channels) == {"voice", "chat", "email"}
    assert scenario.router.exclusive_channels == ("voice",)
    assert all(a.capacity.get("voice", 0) <= 1 for a in arrivals_.roster(scenario))


@pytest.mark.parametrize("policy", POLICIES)
def test_no_agent_on_a_call_is_given_other_work(policy: str) -> None:
    engine = CallWatcher(load(SCENARIO), policy)
    engine.simulate()
    assert engine.calls_given > 300, "the day should be busy with calls"  # else the check proves nothing
    assert engine.double_booked == [], engine.double_booked[:5]


def test_the_contact_centre_day_is_deterministic() -> None:
    first, again = run(load(SCENARIO)), run(load(SCENARIO))
    assert first == again
    voice = first["policies"]["relaydesk"]["channels"]["voice"]
    assert voice["arrivals"] > 300


def test_without_the_rule_round_robin_would_send_chats_to_agents_on_calls() -> None:
    """The watcher sees double booking where it happens (so its silence above means something)."""
    scenario = load(SCENARIO)
    unruled = msgspec.structs.replace(scenario, router=msgspec.structs.replace(scenario.router, exclusive_channels=()))
    engine = CallWatcher(unruled, "chatwoot")
    engine.simulate()
    assert engine.double_booked
