"""A conversation's language, decided offline from all the evidence, each piece weighed.

The text: py3langid's bundled model (limited to the languages the team serves: unrestricted,
short texts drift to rare languages) beside a lexicon of customer-service words
(``language_lexicon``) that short messages ("hola", "merci", "senha") are made of. The
priors (``language_priors``): the customer's profile ``preferred_language``, the language of
their earlier conversations, the phone number's country, the email domain's country, the chat
page's / browser's language and the provider's locale. The decision multiplies the text's
probabilities by each prior's factor: a confident text beats a prior, a weak text leans on
the priors, and with nothing to go on the default language wins (it is the base rate).

``decide`` is pure; ``LanguageDetector`` holds the model and the settings.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from events.model import InboundMessage, LanguageEvidence, LanguageReason
from services.intake import language_lexicon, language_priors

# How far each prior multiplies the odds of the language it points to (1 + weight × share):
# the profile is what the customer or an operator said; earlier conversations are what the
# customer wrote before; a page, browser or provider locale is the customer's own setting; a
# phone or email country is only where they live.
PRIOR_WEIGHTS: dict[str, float] = {
    "profile": 8.0,
    "history": 4.0,
    "page": 3.0,
    "provider": 3.0,
    "browser": 2.0,
    "phone": 1.5,
    "email": 1.5,
}
DEFAULT_WEIGHT = 0.5  # the team's default language: the base rate, a tie-breaker
# A lexicon word's odds for the languages it belongs to (exact, within one edit).
LEXICON_ODDS = 12.0
NEAR_ODDS = 3.0
# py3langid's probabilities on a few characters are overconfident: tempered.
LANGID_TEMPER = 0.6
EARLIER_MESSAGE_WEIGHT = 0.5  # earlier messages of the conversation count half the latest
# A later message moves the conversation to another language only when it alone says so
# this confidently, and the decision over all the evidence agrees.
CORRECTION_CONFIDENCE = 0.9
# Texts whose scores are kept: more than the messages one intake process has in flight.
SCORE_CACHE = 4096
# Characters of a message scored for its language: its opening (see ``_score``).
SCORED_CHARS = 4_000
# A text with no Latin-script word (Arabic, Cyrillic, Han, Kana, Greek, ...) is evidence only
# when py3langid, over every language it knows, gives the team's languages at least this share.
SERVED_SHARE = 0.1


@dataclass(frozen=True)
class Prior:
    """One piece of evidence besides the text: a share per language and how far it counts."""

    source: str
    shares: Mapping[str, float]
    weight: float

    def factor(self, language: str) -> float:
        return 1.0 + self.weight * self.shares.get(language, 0.0)


@dataclass(frozen=True)
class LanguageDecision:
    language: str
    confidence: float  # the decision's probability, all evidence weighed
    text: Mapping[str, float]  # the text's own probabilities (no priors)
    priors: tuple[Prior, ...] = ()
    chosen: bool = False  # the customer chose it (a voice menu): nothing weighed

    @property
    def text_language(self) -> str:
        return max(self.text, key=lambda k: self.text[k]) if self.text else self.language

    def reason(self) -> LanguageReason:
        """What the routing reason shows: each source, the language it pointed to and its weight
        (the text: its probability; a prior: its factor's weight times the share)."""
        if self.chosen:
            return LanguageReason(confidence=1.0, evidence=(LanguageEvidence(source="chosen", language=self.language),))
        evidence = []
        if self.text:
            top = self.text_language
            evidence.append(LanguageEvidence(source="text", language=top, weight=round(self.text[top], 3)))
        for prior in self.priors:
            top = max(prior.shares, key=lambda k: prior.shares[k])
            evidence.append(
                LanguageEvidence(source=prior.source, language=top, weight=round(prior.weight * prior.shares[top], 3))
            )
        return LanguageReason(confidence=round(self.confidence, 3), evidence=tuple(evidence))


def decide(
    text: Mapping[str, float], priors: Sequence[Prior], languages: Sequence[str], default: str
) -> LanguageDecision:
    """The most probable language given the text's probabilities and the priors (pure)."""
    candidates = list(dict.fromkeys([*languages, default]))
    uniform = 1.0 / len(candidates)
    scores = {}
    for language in candidates:
        score = text.get(language, uniform) if text else uniform
        for prior in priors:
            score *= prior.factor(language)
        if language == default:
            score *= 1.0 + DEFAULT_WEIGHT
        scores[language] = score
    total = sum(scores.values()) or 1.0
    language = max(candidates, key=lambda k: scores[k])
    return LanguageDecision(language, scores[language] / total, dict(text), tuple(priors))


def priors_for(
    message: InboundMessage,
    languages: Sequence[str],
    *,
    preferred_language: str | None = None,
    earlier_languages: Sequence[str] = (),
) -> list[Prior]:
    """The priors a message and the customer's history offer. The connector's metadata may
    carry ``page_language`` (the chat page's ``<html lang>``), ``browser_language``
    (``navigator.language`` / Accept-Language) and ``locale`` (the provider's, e.g. a
    social profile's); a phone sender's country and an email sender's domain are read off
    the address."""
    known = tuple(languages)
    priors: list[Prior] = []
    if preferred_language:
        language = language_priors.locale_language(preferred_language, known)
        if language:
            priors.append(Prior("profile", {language: 1.0}, PRIOR_WEIGHTS["profile"]))
    usable = [lang for lang in earlier_languages if lang in known]
    if usable:
        shares = {lang: usable.count(lang) / len(usable) for lang in dict.fromkeys(usable)}
        priors.append(Prior("history", shares, PRIOR_WEIGHTS["history"]))
    for source, key in (("page", "page_language"), ("browser", "browser_language"), ("provider", "locale")):
        language = language_priors.locale_language(message.metadata.get(key, ""), known)
        if language:
            priors.append(Prior(source, {language: 1.0}, PRIOR_WEIGHTS[source]))
    for source, region in (
        ("phone", language_priors.phone_region(message.sender)),
        ("email", language_priors.email_region(message.sender) if message.channel == "email" else None),
    ):
        shares = language_priors.region_languages(region, known)
        if shares:
            priors.append(Prior(source, shares, PRIOR_WEIGHTS[source]))
    return priors


class LanguageDetector:
    def __init__(
        self, languages: Sequence[str], default: str, min_confidence: float = 0.6, *, lexicon: bool = True
    ) -> None:
        self.default = default
        self.min_confidence = min_confidence
        self.lexicon = lexicon  # off: py3langid alone (``relaydesk bench language``'s baseline)
        self.languages = tuple(dict.fromkeys([*languages, default]))
        # Every language the model knows (for texts in other scripts, see ``_score``) and the
        # team's: two views of one model (the large table is shared, not loaded twice).
        full = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._all = full
        self._identifier = copy.copy(full)  # ``set_languages`` re-points it, ``full`` is left whole
        self._identifier.set_languages(list(self.languages))
        # The same least-recently-used cache as intake's identities (``Intake._identity``).
        self._scored = functools.lru_cache(maxsize=SCORE_CACHE)(self._score)

    def text_scores(self, text: str) -> dict[str, float]:
        """The text's probability per language (empty: no letters to go on); not to be changed.

        Kept for the last ``SCORE_CACHE`` texts: triage and the conversation's decision ask for
        the same message, and a conversation's earlier messages are asked again with each new
        one, while scoring (py3langid) is intake's dearest step."""
        return self._scored(text)

    def _score(self, text: str) -> dict[str, float]:
        # The opening tells the language; scoring a whole 100,000-character email (or a
        # forged 600 KB text) held intake's loop, and every service's under `up`, for seconds.
        text = text[:SCORED_CHARS]
        words = language_lexicon.words(text)
        if not words and not self._served_script(text):
            return {}
        logs = {lang: LANGID_TEMPER * math.log(max(p, 1e-12)) for lang, p in self._identifier.rank(text)}
        for word in words if self.lexicon else ():
            found, exact = language_lexicon.lookup(word)
            if found and len(found) < len(self.languages):
                odds = math.log(LEXICON_ODDS if exact else NEAR_ODDS)
                for lang in found & logs.keys():
                    logs[lang] += odds
        return _normalised(logs)

    def _served_script(self, text: str) -> bool:
        """Whether a text without a Latin-script word is worth scoring: it has letters, and the
        model over all its languages gives the team's a real share (``SERVED_SHARE``). Found by
        an audit: such texts were never scored (the lexicon reads Latin letters only), so with
        ``ar``, ``zh``, ``ru`` or ``ja`` configured an Arabic, Chinese, Russian or Japanese
        message still went to the default language; and scored by the restricted model
        alone, a Greek text read as Italian where only Latin-script languages are served."""
        if not any(ch.isalpha() for ch in text):
            return False
        served = set(self.languages)
        return sum(p for lang, p in self._all.rank(text) if lang in served) >= SERVED_SHARE

    def conversation_scores(self, texts: Sequence[str]) -> dict[str, float]:
        """All the customer's messages of a conversation, oldest first: each message's evidence
        multiplied in, the earlier ones counting ``EARLIER_MESSAGE_WEIGHT`` (a customer who
        switches language is followed)."""
        logs: dict[str, float] = {}
        for age, text in enumerate(reversed(texts)):
            scores = self.text_scores(text)
            weight = 1.0 if age == 0 else EARLIER_MESSAGE_WEIGHT
            for lang, p in scores.items():
                logs[lang] = logs.get(lang, 0.0) + weight * math.log(max(p, 1e-12))
        return _normalised(logs) if logs else {}

    def decide(self, texts: Sequence[str], priors: Sequence[Prior] = ()) -> LanguageDecision:
        return decide(self.conversation_scores(texts), priors, self.languages, self.default)

    def detect(self, text: str) -> str:
        """The text's own language, or the default when the text alone does not tell."""
        decision = decide(self.text_scores(text), (), self.languages, self.default)
        return decision.language if decision.confidence >= self.min_confidence else self.default


def _normalised(logs: Mapping[str, float]) -> dict[str, float]:
    top = max(logs.values())
    exps = {lang: math.exp(value - top) for lang, value in logs.items()}
    total = sum(exps.values())
    return {lang: value / total for lang, value in exps.items()}
