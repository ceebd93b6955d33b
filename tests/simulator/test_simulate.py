"""The simulator end to end: same seed same day, shifts, abandonment, surges, the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.cli import main as cli_main
from services.simulator.arrivals import generate, roster, shift_periods
from services.simulator.runner import run, run_policy
from services.simulator.scenario import ScenarioError, load, parse

SCENARIOS = Path(__file__).parents[2] / "services" / "simulator" / "scenarios"


def small(**simulation: Any) -> Any:
    return parse(
        {
            "simulation": {"name": "small", "seed": 5, "hours": 6, **simulation},
            "channels": {
                "chat": {
                    "sla_seconds": 60,
                    "handle_mean_seconds": 600,
                    "patience_mean_seconds": 120,
                    "rate_per_hour": 30,
                },
                "email": {"sla_seconds": 3600, "handle_mean_seconds": 600, "rate_per_hour": 6},
            },
            "mix": {"languages": {"en": 0.7, "es": 0.3}, "skills": {"billing": 0.5, "tech": 0.5}},
            "agents": [
                {
                    "prefix": "day",
                    "count": 3,
                    "skills": {"billing": 3, "tech": 1},
                    "languages": {"en": 5},
                    "shift": [0, 4],
                },
                {"prefix": "es", "count": 1, "skills": {"billing": 2, "tech": 2}, "languages": {"es": 5, "en": 3}},
            ],
            "offers": {"decline_rate": 0.1, "expire_rate": 0.05},
        }
    )


def test_same_scenario_and_seed_give_the_same_result() -> None:
    assert run(small()) == run(small())
    assert run(small(seed=6))["policies"] != run(small())["policies"]


def test_every_policy_faces_the_same_arrivals() -> None:
    result = run(small())
    assert {s["arrivals"] for s in result["policies"].values()} == {result["arrivals"]}


def test_nobody_gets_new_work_off_shift_and_impatient_customers_leave() -> None:
    scenario = small()
    arrivals = {a.conversation_id: a for a in generate(scenario)}
    for policy in ("relaydesk", "chatwoot", "rocketchat", "taskrouter"):
        records = run_policy(scenario, policy).conversations
        late = [r for r in records if r.answered_at is not None and r.answered_at > 4 * 3600 + 10]
        assert late and all(r.agent_id == "es-1" for r in late), policy  # "day" agents left at 04:00
        abandoned = [r for r in records if r.abandoned_at is not None]
        assert abandoned, policy  # one Spanish-capable agent alone after 04:00: chats wait
        for r in abandoned:
            assert r.answered_at is None
            assert r.abandoned_at == pytest.approx(r.arrived_at + arrivals[r.conversation_id].patience_seconds)


def test_a_night_shift_runs_past_midnight() -> None:
    scenario = parse(
        {
            "simulation": {"hours": 24},
            "channels": {"chat": {"sla_seconds": 60, "handle_mean_seconds": 600}},
            "agents": [{"prefix": "night", "shift": [22, 30]}],
        }
    )
    assert shift_periods(roster(scenario)[0], 24) == [(0.0, 6 * 3600.0), (22 * 3600.0, 24 * 3600.0)]


def test_a_surge_multiplies_arrivals_for_its_hour_and_needs_its_skill() -> None:
    table: dict[str, Any] = {
        "simulation": {"hours": 3, "seed": 2},
        "channels": {"chat": {"sla_seconds": 60, "handle_mean_seconds": 600, "rate_per_hour": 100}},
        "agents": [{"prefix": "a"}],
        "surges": [{"start_hour": 1, "hours": 1, "factor": 5, "skill": "outage"}],
    }
    arrivals = generate(parse(table))
    per_hour = [[a for a in arrivals if h * 3600 <= a.at < (h + 1) * 3600] for h in range(3)]
    assert 400 < len(per_hour[1]) < 600 and 70 < len(per_hour[0]) < 130
    assert {a.skill for a in per_hour[1]} == {"outage"}


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    scenario = load(path)
    assert roster(scenario) and scenario.channels


def test_unknown_policies_and_bad_profiles_are_refused() -> None:
    base: dict[str, Any] = {
        "channels": {"chat": {"sla_seconds": 60, "handle_mean_seconds": 1}},
        "agents": [{"prefix": "a"}],
    }
    with pytest.raises(ScenarioError, match="unknown policy"):
        parse({**base, "simulation": {"policies": ["fifo"]}})
    with pytest.raises(ScenarioError, match="24 hourly"):
        parse({**base, "channels": {"chat": {"sla_seconds": 60, "handle_mean_seconds": 1, "profile": [1.0]}}})


def test_the_command_prints_a_table_and_writes_json_and_a_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["simulate", str(SCENARIOS / "retail.toml"), "--hours", "3", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("relaydesk", "chatwoot", "rocketchat", "taskrouter", "SL right agent"):
        assert name in printed
    figures = json.loads((tmp_path / "retail.json").read_text())
    assert set(figures["policies"]) == {"relaydesk", "chatwoot", "rocketchat", "taskrouter"}
    relaydesk = figures["policies"]["relaydesk"]
    assert 0 <= relaydesk["service_level"] <= 1 and set(relaydesk["channels"]) == {"chat", "sms", "social", "email"}
    assert len(relaydesk["hourly"]["service_level"]) == 3
    assert (tmp_path / "retail.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_says_what_is_wrong_with_a_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[simulation]\npolicies = ["fifo"]\n'
        '[channels.chat]\nsla_seconds = 1\nhandle_mean_seconds = 1\n[[agents]]\nprefix = "a"\n'
    )
    assert cli_main(["simulate", str(bad), "--out", str(tmp_path)]) == 2
    assert "unknown policy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--hours", "-1"], "simulation.hours must be above 0, not -1"),
        (["--hours", "0"], "simulation.hours must be above 0, not 0"),
        (["--out", "{file}"], "cannot write to --out {file}: File exists"),
    ],
)
def test_the_command_refuses_wrong_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], said: str
) -> None:
    """``--hours -1`` ran and printed a table of nothing; ``--out`` naming a file ended, after
    the whole run, in a FileExistsError traceback. Now one line on stderr, exit 2, before any run."""
    taken = tmp_path / "taken.txt"
    taken.write_text("")
    extra = [arg.format(file=taken) for arg in extra]
    argv = ["simulate", str(SCENARIOS / "retail.toml"), "--no-chart"]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "out")]
    assert cli_main([*argv, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"relaydesk simulate: {said.format(file=taken)}\n"
    assert captured.out == ""
