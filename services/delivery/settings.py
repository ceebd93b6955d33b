"""``[delivery]`` settings: where each agent's offers and assignments are delivered."""

from __future__ import annotations

from typing import Literal

import msgspec

EndpointKind = Literal["webhook", "slack", "email"]
NOTICE_KINDS: tuple[str, ...] = ("offer", "assigned", "message", "offer_expired", "released")
DEFAULT_NOTICES: tuple[str, ...] = ("offer", "assigned", "message")


class Endpoint(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One place to notify. ``agent`` names one agent ("*": every agent); ``team`` names a
    list in ``[delivery.teams]``. ``url`` for webhook and slack, ``address`` for email;
    ``secret`` signs webhooks (``X-Relaydesk-Signature``)."""

    kind: EndpointKind
    id: str = ""  # default: "<agent or team>-<kind>-<n>"
    agent: str = ""
    team: str = ""
    url: str = ""
    secret: str = ""
    address: str = ""
    notices: tuple[str, ...] = DEFAULT_NOTICES


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
    # One delivery service is active (lease "delivery" in rd_leases); others stand by and
    # take over this long after it stops renewing.
    lease_seconds: float = 5.0
    preview_lines: int = 3
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "relaydesk@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    teams: dict[str, tuple[str, ...]] = {}
    endpoints: tuple[Endpoint, ...] = ()
