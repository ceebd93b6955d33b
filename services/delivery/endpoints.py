"""The delivery endpoints: their ids, which of them a notice goes to, how many attempts one
endpoint may have in flight, and what the delivery settings get wrong (refused at start by the
delivery service, said first by ``relaydesk config check``)."""

from __future__ import annotations

from collections.abc import Mapping

from events import subjects
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.slack_settings import SlackSettings, endpoint_problems


def endpoint_ids(settings: DeliverySettings) -> dict[str, Endpoint]:
    """Endpoints by id (ids filled in where the config left them out)."""
    out: dict[str, Endpoint] = {}
    for n, endpoint in enumerate(settings.endpoints, 1):
        eid = endpoint.id or f"{endpoint.agent or endpoint.team or 'all'}-{endpoint.kind}-{n}".replace("*", "all")
        out[eid] = endpoint
    return out


def endpoints_for(
    endpoints: Mapping[str, Endpoint], teams: Mapping[str, tuple[str, ...]], agent_id: str, notice: str
) -> list[tuple[str, Endpoint]]:
    """The endpoints (id, endpoint) that want ``notice`` for this agent: hers, everyone's
    (``*``), or her team's (``teams``: ``[delivery.teams]``)."""
    out = []
    for eid, endpoint in endpoints.items():
        if not endpoint.wants(notice):
            continue
        if endpoint.agent in ("*", agent_id) or (endpoint.team and agent_id in teams.get(endpoint.team, ())):
            out.append((eid, endpoint))
    return out


def settings_problems(settings: DeliverySettings, slack: SlackSettings | None = None) -> list[str]:
    problems = []
    if settings.concurrency < 1:
        problems.append(f"concurrency must be 1 or more (got {settings.concurrency})")
    if not 0 <= settings.per_endpoint_concurrency <= max(1, settings.concurrency):
        problems.append(
            f"per_endpoint_concurrency must be 0 (a quarter of concurrency) to concurrency "
            f"({settings.concurrency}) (got {settings.per_endpoint_concurrency})"
        )
    if settings.max_attempts < 1:
        problems.append(f"max_attempts must be 1 or more (got {settings.max_attempts})")
    if not settings.timeout > 0:
        problems.append(f"timeout must be more than 0 seconds (got {settings.timeout})")
    if settings.backoff_base < 0 or settings.backoff_max < 0:
        problems.append("backoff_base and backoff_max must be 0 or more")
    for eid, endpoint in endpoint_ids(settings).items():
        try:
            subjects.token(eid)
        except subjects.InvalidToken:
            problems.append(f"endpoint id {eid!r}: letters, digits, '-' and '_' only")
        if not (endpoint.agent or endpoint.team):
            problems.append(f"endpoint {eid}: name an agent (or '*') or a team")
        if endpoint.team and endpoint.team not in settings.teams:
            problems.append(f"endpoint {eid}: no team {endpoint.team!r} in [delivery.teams]")
        if endpoint.kind == "slack":
            problems += endpoint_problems(eid, endpoint.url, endpoint.channel, slack or SlackSettings())
        elif endpoint.kind in ("webhook", "teams") and not endpoint.url.startswith(("http://", "https://")):
            problems.append(f"endpoint {eid}: {endpoint.kind} needs an http(s) url")
        if endpoint.kind == "webhook" and not endpoint.secret:
            problems.append(f"endpoint {eid}: a webhook needs a secret to sign with")
        if endpoint.kind == "email" and "@" not in endpoint.address:
            problems.append(f"endpoint {eid}: email needs an address")
    return problems


def endpoint_limit(settings: DeliverySettings) -> int:
    """Attempts in flight at once to one endpoint: ``per_endpoint_concurrency``, else a quarter
    of ``concurrency`` (at least one)."""
    return settings.per_endpoint_concurrency or max(1, settings.concurrency // 4)
