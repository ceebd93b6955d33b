"""Twilio request signatures (``X-Twilio-Signature``), written from the spec, no twilio package.

signature = base64(HMAC-SHA1(auth token, URL + for each param name in sorted order, for
each of its values in sorted order: name + value)). The URL is exactly the one Twilio called;
Twilio may have signed it with or without the default port, so both are tried. JSON bodies
carry ``bodySHA256=<hex>`` in the URL and the signature covers the URL alone.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_DIGESTS = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}
_DIGEST_NAMES = {HMAC_SHA1: "sha1", HMAC_SHA256: "sha256"}
_DEFAULT_PORTS = {"https": 443, "http": 80}

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        # A MultiDict's items() yields every value of every name; a dict's, its one value.
        return list(params.items())
    return list(params)


def _params_part(params: Params) -> str:
    """The parameters' share of the signed string: each distinct (name, value) pair, sorted
    by name then value, as name + value."""
    return "".join([name + value for name, value in sorted(set(_pairs(params)))])


def signing_string(url: str, params: Params) -> str:
    return url + _params_part(params)


def _mac(token: str, message: str, algorithm: str) -> str:
    digest = _DIGEST_NAMES.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    # hmac.digest: OpenSSL's one-shot HMAC, without the Python HMAC object (a webhook's hot path).
    mac = hmac.digest(token.encode("utf-8"), message.encode("utf-8"), digest)
    return base64.b64encode(mac).decode("ascii")


def compute(token: str, url: str, params: Params = (), algorithm: str = HMAC_SHA1) -> str:
    return _mac(token, signing_string(url, params), algorithm)


def url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with the default port removed (when present)
    or added (when absent)."""
    return list(_url_variants(url))


@functools.lru_cache(maxsize=256)  # a connector is called on a handful of URLs, over and over
def _url_variants(url: str) -> tuple[str, ...]:
    out = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return tuple(out)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None:
        return tuple(out)
    if port is None:
        out.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    elif port == default:
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])))
    return tuple(out)


def algorithm_of(settings_header: str | None) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` (default HMAC_SHA1)."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def body_hash_ok(url: str, body: bytes) -> bool | None:
    """None when the URL has no ``bodySHA256``; else whether it matches the body."""
    if "?" not in url:  # the usual webhook URL: no query to parse
        return None
    query = parse_qs(urlsplit(url).query)
    expected = query.get("bodySHA256")
    if not expected:
        return None
    return hmac.compare_digest(hashlib.sha256(body).hexdigest(), expected[0].lower())


def valid(token: str, url: str, params: Params, signature: str, algorithm: str = HMAC_SHA1) -> bool:
    """Whether ``signature`` signs ``url`` (with or without default port) and ``params``.
    Constant-time comparison; every variant is computed and compared."""
    if not token or not signature or algorithm.upper() not in _DIGESTS:
        return False
    given = signature.strip().encode("ascii", "replace")
    tail = _params_part(params)  # the same for every URL variant
    ok = False
    for variant in url_variants(url):
        ok |= hmac.compare_digest(_mac(token, variant + tail, algorithm).encode("ascii"), given)
    return ok
