"""deploy/observability/alerts.yaml is a Prometheus rules file whose every rule says how long,
how bad and what to do, and whose every expression names metrics the code registers: a metric
renamed in the code breaks this test instead of silently never firing (``absent()`` on a
misspelt name fires for ever, a threshold on one never does)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "observability" / "alerts.yaml"

# Series Prometheus makes itself, not a Relaydesk process.
PROMETHEUS_OWN = {"up"}

# Every metric object the packages define at module level (registered or not: the ones only one
# kind of process measures are made with registry=None), and the families of the collectors in
# the default registry (the connectors' relaydesk_connector_<what>_total), as exposition sample
# names. In a fresh interpreter; every module file is imported, services/api too (a namespace
# package, which pkgutil.walk_packages does not enter).
COLLECT = """
import importlib, json, pathlib
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from connectors.sdk.metrics import COUNTERS

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}
names = set()
def add(family):
    names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
for package in ("events", "router", "connectors", "services"):
    for path in sorted(pathlib.Path(package).rglob("*.py")):
        name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        if name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional dependency not installed here
            continue
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    add(family)
for collector in list(REGISTRY._collector_to_names):
    describe = getattr(collector, "describe", None)
    for family in (describe() if describe is not None else []) or collector.collect():
        add(family)
names.update(f"relaydesk_connector_{name}_total" for name in COUNTERS)
print(json.dumps(sorted(n for n in names if n.startswith("relaydesk_"))))
"""


@functools.cache
def registered() -> frozenset[str]:
    done = subprocess.run([sys.executable, "-c", COLLECT], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return frozenset(json.loads(done.stdout))


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}, "a rules file is one `groups:` list"
    return [rule for group in doc["groups"] for rule in group["rules"]]


KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges, durations, groupings and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group() in KEYWORDS:
            continue  # a function, an aggregation, an operator
        if re.fullmatch(r"\d+[smhdwy]", text[match.start() - 1 : match.end()]):
            continue
        names.add(match.group())
    return names


def test_the_parser_finds_metric_names() -> None:
    expr = (
        'sum by (kind) (rate(relaydesk_a_total{reader=~"connector:.*"}[10m])) > 0 '
        'and deriv(max(relaydesk_b)[10m:1m]) > 0 or absent(relaydesk_c{lease="router"}) or up == 0'
    )
    assert metric_names(expr) == {"relaydesk_a_total", "relaydesk_b", "relaydesk_c", "up"}


def test_every_rule_says_how_long_how_bad_and_what_to_do() -> None:
    found = rules()
    assert len(found) >= 10
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in found:
        name = rule["alert"]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), f"{name}: for: a duration"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert summary and description, name
        assert "README" in description or "relaydesk " in description or "deploy/README.md" in description, (
            f"{name}: the description says where to look or what to run"
        )


def test_the_rules_cover_what_operators_are_paged_for() -> None:
    exprs = "\n".join(rule["expr"] for rule in rules())
    for needed in (
        'relaydesk_leader{lease="router"}',
        'relaydesk_leader{lease="delivery"}',
        "relaydesk_intake_pending_messages",
        "relaydesk_intake_oldest_pending_age_seconds",
        "relaydesk_parked_messages",
        "relaydesk_projector_stalled_seconds",
        "relaydesk_projector_lag_events",
        "relaydesk_api_view_lag_events",
        "relaydesk_delivery_failures_total",
        'relaydesk_dead_letters_total{reader=~"connector:.*"}',
        # A helpdesk down or throttling for long, refused credentials, refused events (found by
        # an outage audit: a sink stalled for hours on a helpdesk outage told no one).
        'relaydesk_sink_events_total{outcome="retried"}',
        "relaydesk_sink_auth_failures_total",
        'relaydesk_sink_events_total{outcome="parked"}',
        "up{",
    ):
        assert needed in exprs, needed


def test_every_metric_an_expression_names_is_registered_by_the_code() -> None:
    known = registered() | PROMETHEUS_OWN
    assert "relaydesk_parked_messages" in known and "relaydesk_routing_decide_seconds_bucket" in known
    for rule in rules():
        used = metric_names(rule["expr"]) | set(re.findall(r"\brelaydesk_[a-z0-9_]+", rule["expr"]))
        assert used, rule["alert"]
        unknown = sorted(used - known)
        assert not unknown, f"{rule['alert']} names {unknown}, which no Relaydesk process exports"
