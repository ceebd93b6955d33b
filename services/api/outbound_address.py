"""Where an outbound-first message goes (``POST /v1/conversations``, services.api.outbound).

An address's kind (``sms:+1…``, ``whatsapp:…``, ``email:…``, ``messenger:…``, ``instagram:…``,
or a plug-in connector's own ``<channel>:<address>``) names the platform and the channel that
carries it; ``Target`` is whom to write to, where, and what the log says about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.api.common import ApiDeps, ApiError
from services.config_names import BUILT_IN_CHANNELS

# What an address's kind (``sms:+1…``) means: the platform, and the channel it goes out on
# unless the body names one (WhatsApp goes through the Cloud API connector when one runs).
PLATFORMS: dict[str, tuple[str, ...]] = {
    "sms": ("sms",),
    "whatsapp": ("social", "sms"),
    "email": ("email",),
    "messenger": ("social",),
    "instagram": ("social",),
}
WINDOWED = frozenset({"whatsapp", "messenger", "instagram"})


@dataclass
class Target:
    """Whom to write to, where, and what the log says about them."""

    customer_id: str
    identity: str  # ``<kind>:<normalised address>``
    platform: str
    channel: str
    contact: str
    metadata: dict[str, str] = field(default_factory=dict)
    created: bool = False


def plugin_channels(deps: ApiDeps) -> tuple[str, ...]:
    """The channels of connectors made with the SDK (``[connectors.<name>]``, installed): an
    agent may write first there too, to ``<channel>:<address>``, the connector's own contact."""
    return tuple(c for c in deps.registry.channels if c not in BUILT_IN_CHANNELS and c not in PLATFORMS)


def parse_address(address: str, channel: str, deps: ApiDeps) -> tuple[str, str, str]:
    """(platform, channel, raw address) of ``<kind>:<address>``."""
    kind, colon, raw = address.strip().partition(":")
    kind = kind.strip().lower()
    plugins = plugin_channels(deps)
    if not colon or (kind not in PLATFORMS and kind not in plugins) or not raw.strip():
        kinds = ", ".join(f"{k}:…" for k in (*PLATFORMS, *plugins))
        raise ApiError(400, f"address must be <kind>:<address>, one of {kinds}", address_kind=kind)
    if kind in plugins:
        if channel and channel != kind:
            raise ApiError(400, f"{kind} goes out on {kind}, not {channel}")
        return kind, kind, raw.strip()
    return kind, pick_channel(kind, channel, deps), raw.strip()


def pick_channel(platform: str, channel: str, deps: ApiDeps) -> str:
    allowed = PLATFORMS[platform]
    if channel:
        if channel not in allowed:
            raise ApiError(400, f"{platform} goes out on {' or '.join(allowed)}, not {channel}")
        return channel
    if len(allowed) > 1:
        # The Cloud API connector when one is configured, else WhatsApp through Twilio.
        configured = [c for c in allowed if c in deps.connectors]
        return (configured or list(allowed))[0]
    return allowed[0]


def contact_for(platform: str, channel: str, identity: str) -> str:
    """The contact a connector sends to, as that connector's inbound messages spell it."""
    address = identity.partition(":")[2]
    if platform == "whatsapp":
        # Twilio: whatsapp:+E164; the Cloud API: the wa_id, digits with the country code.
        return f"whatsapp:{address}" if channel == "sms" else address.lstrip("+")
    return address


def platform_of_identity(identity: str, channel: str) -> str | None:
    kind = identity.partition(":")[0]
    if kind == channel and channel not in BUILT_IN_CHANNELS:
        return channel  # a plug-in channel's own identity (``telegram:42``)
    if channel == "sms" and kind == "phone":
        return "sms"
    if channel == "social" and kind == "phone":
        return "whatsapp"
    if channel == "email" and kind == "email":
        return "email"
    if channel == "social" and kind == "social":
        return "messenger"  # the platform is corrected from the customer's messages (last_inbound)
    return None
