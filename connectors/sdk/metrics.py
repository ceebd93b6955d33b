"""Counters of one connector process, exposed as Prometheus text at ``GET /metrics``."""

from __future__ import annotations

from collections import Counter

# name -> help text; every counter is rendered even at zero so dashboards see it.
COUNTERS: dict[str, str] = {
    "requests": "HTTP requests received on inbound routes",
    "received": "Customer messages parsed from verified requests",
    "published": "Messages acknowledged by JetStream as new",
    "duplicates": "Messages acknowledged by JetStream as duplicates (provider retries)",
    "rejected": "Requests refused (authenticity, malformed, too large)",
    "unavailable": "Requests answered 503 because NATS did not acknowledge in time",
    "delivered": "Replies the provider accepted",
    "delivery_failed": "Replies that ended in DeliveryFailed",
    "delivery_retries": "Provider calls retried after a transient failure",
}


class Metrics:
    def __init__(self, connector: str, channel: str) -> None:
        self.connector = connector
        self.channel = channel
        self.counts: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(name)
        self.counts[name] += n

    def reject(self, kind: str) -> None:
        self.counts["rejected"] += 1
        self.rejected_by_reason[kind] += 1

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def snapshot(self) -> dict[str, int]:
        return {name: self.counts[name] for name in COUNTERS}

    def render(self) -> str:
        labels = f'connector="{self.connector}",channel="{self.channel}"'
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            metric = f"relaydesk_connector_{name}_total"
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} counter")
            if name == "rejected" and self.rejected_by_reason:
                for kind, value in sorted(self.rejected_by_reason.items()):
                    lines.append(f'{metric}{{{labels},kind="{kind}"}} {value}')
            else:
                lines.append(f"{metric}{{{labels}}} {self.counts[name]}")
        return "\n".join(lines) + "\n"
