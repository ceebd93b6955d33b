"""What a message's surroundings say about its language, before a word of it is read: the
phone number's country, the email domain's country TLD, a page/browser/provider locale.

Shares of each country's speakers among the languages intake detects, rounded, after the
Unicode CLDR territory data (``supplementalData.xml`` ``territoryInfo``: language population
per territory) and written for this project; only countries where one of en es fr de pt it is
widely spoken are listed. A country not listed says nothing (no prior), never "English".
"""

from __future__ import annotations

import functools

import phonenumbers

# Region (ISO 3166-1 alpha-2, as phonenumbers and ccTLDs name it) → language → share.
REGION_LANGUAGES: dict[str, dict[str, float]] = {
    # English first
    "US": {"en": 0.8, "es": 0.2},
    "GB": {"en": 1.0},
    "IE": {"en": 1.0},
    "AU": {"en": 1.0},
    "NZ": {"en": 1.0},
    "ZA": {"en": 1.0},
    "IN": {"en": 1.0},
    "SG": {"en": 1.0},
    "NG": {"en": 1.0},
    "PH": {"en": 1.0},
    "CA": {"en": 0.75, "fr": 0.25},
    # Spanish
    "ES": {"es": 1.0},
    "MX": {"es": 1.0},
    "AR": {"es": 1.0},
    "CO": {"es": 1.0},
    "CL": {"es": 1.0},
    "PE": {"es": 1.0},
    "VE": {"es": 1.0},
    "EC": {"es": 1.0},
    "GT": {"es": 1.0},
    "CU": {"es": 1.0},
    "BO": {"es": 1.0},
    "DO": {"es": 1.0},
    "HN": {"es": 1.0},
    "PY": {"es": 1.0},
    "SV": {"es": 1.0},
    "NI": {"es": 1.0},
    "CR": {"es": 1.0},
    "PA": {"es": 1.0},
    "UY": {"es": 1.0},
    "PR": {"es": 0.8, "en": 0.2},
    # French
    "FR": {"fr": 1.0},
    "BE": {"fr": 0.6, "de": 0.1, "en": 0.3},  # Dutch, the majority, is not detected here
    "LU": {"fr": 0.5, "de": 0.5},
    "MC": {"fr": 1.0},
    "SN": {"fr": 1.0},
    "CI": {"fr": 1.0},
    "CM": {"fr": 0.7, "en": 0.3},
    "MA": {"fr": 1.0},
    "TN": {"fr": 1.0},
    "DZ": {"fr": 1.0},
    "HT": {"fr": 1.0},
    # German
    "DE": {"de": 1.0},
    "AT": {"de": 1.0},
    "LI": {"de": 1.0},
    "CH": {"de": 0.65, "fr": 0.25, "it": 0.1},
    # Portuguese
    "PT": {"pt": 1.0},
    "BR": {"pt": 1.0},
    "AO": {"pt": 1.0},
    "MZ": {"pt": 1.0},
    "CV": {"pt": 1.0},
    # Italian
    "IT": {"it": 1.0},
    "SM": {"it": 1.0},
    "VA": {"it": 1.0},
}

# Country-code TLDs that are not a country's own ("uk" is GB's; ".io", ".co", ".me", ".tv"
# are sold worldwide as brand names and say nothing of the writer).
_TLD_REGION = {"uk": "GB"}
_BRAND_TLDS = frozenset({"io", "co", "me", "tv", "ai", "fm", "ly", "to", "cc", "ws", "la", "sh", "gg", "so"})


@functools.lru_cache(maxsize=16_384)  # pure, and phonenumbers' parse is dear: a returning sender's is kept
def phone_region(number: str) -> str | None:
    """The country of an E.164 number ("+34600111222" → "ES"); None if it is not one."""
    if not number.startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed)
    return region if region and region != "ZZ" else None


def email_region(address: str) -> str | None:
    """The country of an email address's domain TLD ("ana@correo.es" → "ES"); None for a
    generic one (.com, .org) or a TLD sold as a brand (.io, .co)."""
    _, at, domain = address.rpartition("@")
    if not at:
        return None
    tld = domain.rstrip(".").rpartition(".")[2].lower()
    if len(tld) != 2 or tld in _BRAND_TLDS:
        return None
    return _TLD_REGION.get(tld, tld.upper())


def region_languages(region: str | None, languages: tuple[str, ...]) -> dict[str, float]:
    """The region's share per detected language (empty when the region says nothing)."""
    shares = REGION_LANGUAGES.get(region or "", {})
    return {language: share for language, share in shares.items() if language in languages}


def locale_language(tag: str, languages: tuple[str, ...]) -> str | None:
    """The language of a locale or Accept-Language value ("pt-BR", "es_MX", "fr-CH,fr;q=0.9")
    when it is one intake detects."""
    first = tag.split(",")[0].split(";")[0].strip().replace("_", "-")
    language = first.split("-")[0].lower()
    return language if language in languages else None
