"""What the Twilio connectors (SMS, voice) share: account settings and the webhook check.

A webhook is form-encoded and signed (``X-Twilio-Signature``, see ``signature``) over the
public URL Twilio called plus the form parameters.
"""

from __future__ import annotations

import structlog
from multidict import MultiDictProxy

from connectors.sdk import ConnectorSettings, Malformed, ProviderRequest, Unauthentic
from connectors.sdk.signatures import first_match, secret_list

from . import signature

log = structlog.get_logger("relaydesk.connector.twilio")


class TwilioSettings(ConnectorSettings, kw_only=True):
    """A Twilio account: the auth token checks webhook signatures and authenticates API calls."""

    auth_token: str = ""
    # Also accepted on webhooks, never used to send: while rotating, Twilio's secondary token
    # (before it is promoted) or the old primary (after), as a list or comma-separated, so
    # replicas holding either token accept what Twilio signs with the other.
    extra_auth_tokens: list[str] | str = []
    # e.g. "https://relay.example.com" behind a proxy; "" = URL as received.
    public_base_url: str = ""
    account_sid: str = ""
    # Secret for SharedKey-signed webhooks (HMAC_SHA256); "" = auth_token.
    signing_key_secret: str = ""
    api_base_url: str = "https://api.twilio.com"


def form(request: ProviderRequest) -> MultiDictProxy[str]:
    if request.content_type not in ("application/x-www-form-urlencoded", ""):
        raise Malformed(f"expected application/x-www-form-urlencoded, got {request.content_type}")
    return request.form()


def public_url(settings: TwilioSettings, request: ProviderRequest) -> str:
    """The URL Twilio called: ``public_base_url`` + path and query, else as received."""
    base = settings.public_base_url.rstrip("/")
    return f"{base}{request.raw_path}" if base else request.url


def verify(settings: TwilioSettings, request: ProviderRequest, connector: str, *, body_hash: bool = True) -> None:
    """Raise ``Unauthentic`` unless ``request`` carries a valid Twilio signature for its public URL.
    ``body_hash``: honour ``bodySHA256`` in the URL (the signature then covers the URL alone)."""
    s = settings
    if not s.auth_token:
        raise Unauthentic(f"the {connector} connector has no auth_token configured")
    sig = request.headers.get(signature.SIGNATURE_HEADER)
    if not sig:
        raise Unauthentic(f"missing {signature.SIGNATURE_HEADER} header")
    settings_header = request.headers.get(signature.SETTINGS_HEADER)
    algorithm = signature.algorithm_of(settings_header)
    if settings_header and s.signing_key_secret:
        keys = [s.signing_key_secret]
    else:
        keys = [s.auth_token, *secret_list(s.extra_auth_tokens)]
    url = public_url(s, request)
    body_ok = signature.body_hash_ok(url, request.body) if body_hash else None
    if body_ok is False:
        raise Unauthentic("bodySHA256 does not match the body")
    params: MultiDictProxy[str] | tuple[()] = () if body_ok else form(request)
    matched = first_match(keys, lambda key: signature.valid(key, url, params, sig, algorithm))
    if matched is None:
        where = url.split("?", 1)[0]
        hint = "" if s.public_base_url else "; behind a proxy, set public_base_url"
        # A rotated token refuses every webhook exactly like a wrong URL: say both.
        rotated = "; or signed with another auth token: rotated? list the other in extra_auth_tokens"
        raise Unauthentic(f"invalid {signature.SIGNATURE_HEADER} for {where}{hint}{rotated}")
    if matched > 0:
        # So the operator sees when the old token stops being used and it can be dropped.
        log.info("twilio.signed_with_extra_token", connector=connector, index=matched - 1)
