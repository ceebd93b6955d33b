"""``[delivery]`` settings: where each agent's offers and assignments are delivered."""

from __future__ import annotations

from typing import Literal

import msgspec

EndpointKind = Literal["webhook", "slack", "email", "teams"]  # teams: a Workflows webhook (teams.py)
NOTICE_KINDS: tuple[str, ...] = (
    "offer",
    "assigned",
    "message",
    "offer_expired",
    "released",
    "accepted",
    "declined",
    "resolved",
    "transferred",
)
# A Slack app endpoint (one that names a `channel`) keeps the message it posted for a
# conversation up to date whatever its `notices` say: these update it in place (or, for
# "message", answer in its thread) rather than post a new one (services.delivery.slack_app).
SLACK_IN_PLACE: tuple[str, ...] = (
    "accepted",
    "declined",
    "offer_expired",
    "released",
    "resolved",
    "transferred",
    "message",
)
DEFAULT_NOTICES: tuple[str, ...] = ("offer", "assigned", "message")


class Endpoint(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One place to notify. ``agent`` names one agent ("*": every agent); ``team`` names a
    list in ``[delivery.teams]``. ``url`` for webhook and slack, ``address`` for email;
    ``secret`` signs webhooks (``X-Relaydesk-Signature``). A slack endpoint posts either to an
    incoming webhook (``url``) or, with the ``[slack]`` app's bot token, to ``channel``: a
    channel id (``C0123ABCD``) or ``"dm"`` (each agent's direct messages with the app, the
    agent's Slack user from ``[slack] users``), with Accept / Decline / Resolve buttons."""

    kind: EndpointKind
    id: str = ""  # default: "<agent or team>-<kind>-<n>"
    agent: str = ""
    team: str = ""
    url: str = ""
    secret: str = ""
    address: str = ""
    notices: tuple[str, ...] = DEFAULT_NOTICES
    channel: str = ""  # slack only: post with the Web API to this channel id, or "dm"

    @property
    def slack_app(self) -> bool:
        """Posts with the Slack Web API (interactive), not an incoming webhook."""
        return self.kind == "slack" and bool(self.channel)

    def wants(self, notice: str) -> bool:
        return notice in self.notices or (self.slack_app and notice in SLACK_IN_PLACE)


class DeliverySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    # Where links in notifications point ("" : http://<api host>:<api port>/console).
    console_url: str = ""
    # Attempts per delivery (the first one included) before it is dead-lettered.
    max_attempts: int = 5
    # Backoff before attempt n+1: uniform(0, min(backoff_max, backoff_base * 2**(n-1))) ("full jitter").
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 10.0  # seconds per HTTP request / SMTP session
    # Facts older than this when the service first sees them are not notified (a stale offer
    # after a long outage or on the very first start is noise).
    max_age_seconds: float = 900.0
    # Deliveries in flight at once.
    concurrency: int = 32
    # Of those, to any one endpoint at once (0: a quarter of ``concurrency``, at least 1), so a
    # slow or throttled endpoint cannot take every slot.
    per_endpoint_concurrency: int = 0
    # One delivery service is active (lease "delivery" in rd_leases); others stand by and
    # take over this long after it stops renewing.
    lease_seconds: float = 5.0
    preview_lines: int = 3
    # Events folded between snapshots of what delivery knows, at least (services.delivery.snapshots).
    snapshot_every: int = 10_000
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "relaydesk@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    teams: dict[str, tuple[str, ...]] = {}
    endpoints: tuple[Endpoint, ...] = ()
