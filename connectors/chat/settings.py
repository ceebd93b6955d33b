"""The settings of the web chat connector, ``[connectors.chat]`` (env ``RELAYDESK_CONNECTOR_CHAT_<KEY>``),
and the checks that refuse values that cannot work."""

from __future__ import annotations

import re

from connectors.sdk import ConnectorConfigError, ConnectorSettings
from connectors.sdk.signatures import secret_list

DAY = 24 * 3600.0
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class ChatSettings(ConnectorSettings, kw_only=True):
    """``[connectors.chat]``; env ``RELAYDESK_CONNECTOR_CHAT_<KEY>``."""

    port: int = 8083
    max_body_bytes: int = 64 * 1024
    # Public key the embedding page passes to POST /sessions (required).
    widget_key: str = ""
    # Origins (scheme://host[:port]) allowed to open sessions and sockets; the server's own
    # origin (the demo page) is always allowed. A comma-separated string works too (env).
    allowed_origins: list[str] | str = []
    # Signs session tokens and derives visitor addresses (required, >= 32 chars, stable
    # across restarts and shared by every instance).
    session_secret: str = ""
    # Also accepted for session tokens, never used to seal one (a list or comma-separated, so an
    # env variable or secret file sets it): the other secret while instances are rolled over.
    extra_session_secrets: list[str] | str = []
    # What visitor addresses derive from; "" = session_secret. Rotating session_secret with this
    # set to the old one keeps every returning visitor the customer they were (>= 32 chars).
    address_secret: str = ""
    # HS256 secret shared with the site's backend for logged-in users' identity JWTs; "" = off.
    identity_jwt_secret: str = ""
    # If set, identity JWTs must carry this `aud`.
    identity_jwt_audience: str = ""
    # Session token lifetime (s).
    token_ttl: float = 300.0
    # Messages per minute per address (visitor or user), bursts up to the same number; 0 = off.
    rate_limit_per_minute: int = 30
    # New visitors (an address with no history yet) one client address may open sessions for,
    # per minute, bursts up to the same number; a returning visitor is never counted; 0 = off.
    new_visitors_per_minute: int = 10
    # Sessions (new or returning visitors, token renewals) one client address may open per
    # minute, bursts up to the same number; each costs a read of the history; 0 = off.
    sessions_per_minute: int = 300
    # Behind a reverse proxy: the header carrying the client's address, whose last value (the
    # one your proxy appended) is taken, e.g. "X-Forwarded-For"; "" = the peer's own address.
    client_address_header: str = ""
    # Largest message text (UTF-8 bytes).
    max_message_bytes: int = 4096
    # WebSocket ping interval (s); a peer that does not answer within half of it is dropped.
    heartbeat: float = 20.0
    # Time a socket has to send its auth frame (s).
    auth_timeout: float = 10.0
    # Catch-up history, in the JetStream stream `history_stream` (subjects
    # `<history_subject>.h.<address hash>`, live copies on `<history_subject>.live.<hash>`):
    # frames kept per address, their maximum age (s, 0 = no limit), the stream's total bytes
    # (oldest frames of any address go first; 0 = no limit), replicas, and the window in which a
    # resent message or a reply delivered twice is recognised (s). Every instance must agree.
    history_frames: int = 200
    history_max_age: float = 30 * DAY
    history_bytes: int = 1024 * 1024 * 1024
    history_replicas: int = 0  # 0: `replicas` (which relaydesk sets from [nats] replicas)
    history_dedupe_window: float = DAY
    history_stream: str = "RD_CHAT"
    history_subject: str = "rd.chat"
    # How often (s) an instance checks whether its NATS connection reconnected, to read what
    # its sockets may have missed meanwhile.
    resync_interval: float = 1.0
    # Serve the demo page at GET /.
    demo_page: bool = True


def check(settings: ChatSettings) -> None:
    """Raise ``ConnectorConfigError`` for settings the connector cannot run with."""
    if not settings.widget_key:
        raise ConnectorConfigError("[connectors.chat] widget_key is required")
    if len(settings.session_secret) < 32:
        raise ConnectorConfigError(
            "[connectors.chat] session_secret is required (at least 32 characters, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`): it signs session tokens and "
            "derives visitor addresses, so it must be the same across restarts and instances"
        )
    if settings.address_secret and len(settings.address_secret) < 32:
        raise ConnectorConfigError("[connectors.chat] address_secret must be at least 32 characters")
    if settings.identity_jwt_secret and len(settings.identity_jwt_secret) < 32:
        raise ConnectorConfigError("[connectors.chat] identity_jwt_secret must be at least 32 characters (HS256)")
    if not 0 < settings.token_ttl <= 3600:
        raise ConnectorConfigError("[connectors.chat] token_ttl must be within (0, 3600] seconds")
    if settings.history_frames < 1:
        raise ConnectorConfigError("[connectors.chat] history_frames must be at least 1")
    if not _STREAM_NAME.fullmatch(settings.history_stream):
        raise ConnectorConfigError("[connectors.chat] history_stream must be a stream name (A-Z a-z 0-9 _ -)")
    if not _SUBJECT_PREFIX.fullmatch(settings.history_subject):
        raise ConnectorConfigError("[connectors.chat] history_subject must be dot-separated subject tokens")


def session_secrets(settings: ChatSettings) -> list[str]:
    """The secrets a session token may be sealed with: ``session_secret`` (which seals), then
    ``extra_session_secrets``."""
    return [settings.session_secret, *secret_list(settings.extra_session_secrets)]


def address_secret(settings: ChatSettings) -> str:
    """The secret visitor addresses derive from: kept over a rotation of ``session_secret``."""
    return settings.address_secret or settings.session_secret
