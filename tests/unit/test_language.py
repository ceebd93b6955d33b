"""The conversation's language, decided from all the evidence (``services.intake.language``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from events.model import (
    ConversationLanguageChanged,
    CustomerProfileUpdated,
    InboundMessage,
    LanguageEvidence,
    LogEvent,
    MessageReceived,
    RoutingRequested,
)
from events.store import StoredEvent
from services.intake.customer_history import fold_history
from services.intake.language import LanguageDetector, Prior, decide, priors_for
from services.intake.language_priors import email_region, locale_language, phone_region
from services.intake.plan import Triage, plan

LANGUAGES = ("en", "es", "fr", "de", "pt", "it")
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(LANGUAGES, "en")


def message(text: str, sender: str = "+15551234567", channel: str = "sms", **metadata: str) -> InboundMessage:
    return InboundMessage(
        at=NOW, channel=channel, provider="t", provider_message_id=f"M{abs(hash(text))}", sender=sender, text=text,
        metadata=metadata,
    )  # fmt: skip


def test_the_readme_example_is_spanish_even_from_a_us_number(detector: LanguageDetector) -> None:
    sms = message("Hola, necesito un reembolso", sender="+12125550123")
    decision = detector.decide([sms.text], priors_for(sms, LANGUAGES))
    assert decision.language == "es"
    assert decision.confidence > 0.9
    sources = {e.source: e.language for e in decision.reason().evidence}
    assert sources == {"text": "es", "phone": "en"}  # the prior is shown even though the text won


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("hola", "es"),
        ("gracias", "es"),
        ("merci", "fr"),
        ("bonjour", "fr"),
        ("danke", "de"),
        ("hallo", "de"),
        ("obrigado", "pt"),
        ("senha", "pt"),
        ("grazie", "it"),
        ("ciao", "it"),
        ("refund please", "en"),
        ("passwort vergessen", "de"),
        ("grasias", "es"),  # a typo, matched within one edit
        ("rimborzo", "it"),
    ],
)
def test_hard_short_messages(detector: LanguageDetector, text: str, language: str) -> None:
    assert detector.decide([text]).language == language


def test_a_weak_text_leans_on_the_prior(detector: LanguageDetector) -> None:
    # "reembolso por favor" is Spanish and Portuguese alike: the phone's country decides.
    assert (
        detector.decide(["reembolso por favor"], priors_for(message("x", "+34912345678"), LANGUAGES)).language == "es"
    )
    assert (
        detector.decide(["reembolso por favor"], priors_for(message("x", "+5511987654321"), LANGUAGES)).language == "pt"
    )
    # Nothing to read ("ok", an emoji): the profile's language.
    profile = priors_for(message("👍"), LANGUAGES, preferred_language="it")
    assert detector.decide(["👍"], profile).language == "it"


def test_a_confident_text_beats_every_prior(detector: LanguageDetector) -> None:
    sms = message("where is my order, it was due last week", sender="+34912345678")
    priors = priors_for(sms, LANGUAGES, preferred_language="es", earlier_languages=["es", "es"])
    assert detector.decide([sms.text], priors).language == "en"


def test_with_no_evidence_the_default_language_wins() -> None:
    assert decide({}, [], LANGUAGES, "de").language == "de"
    assert decide({"fr": 0.5, "it": 0.5}, [Prior("phone", {"it": 1.0}, 1.5)], LANGUAGES, "en").language == "it"


def test_priors_read_from_the_message_and_the_history() -> None:
    chat = message("hi", sender="visitor:abc", channel="chat", page_language="fr-CH", browser_language="de-DE,de;q=0.9")
    sources = {p.source: dict(p.shares) for p in priors_for(chat, LANGUAGES, earlier_languages=["pt", "en", "pt"])}
    assert sources == {"history": {"pt": 2 / 3, "en": 1 / 3}, "page": {"fr": 1.0}, "browser": {"de": 1.0}}
    mail = message("hi", sender="ana@correo.es", channel="email", locale="es_MX")
    assert {p.source for p in priors_for(mail, LANGUAGES)} == {"provider", "email"}
    assert priors_for(message("hi", sender="ana@startup.io", channel="email"), LANGUAGES) == []


def test_country_and_locale_helpers() -> None:
    assert phone_region("+34912345678") == "ES"
    assert phone_region("+5511987654321") == "BR"
    assert phone_region("not a number") is None
    assert email_region("x@mail.co.uk") == "GB"
    assert email_region("x@gmail.com") is None
    assert locale_language("pt_BR", LANGUAGES) == "pt"
    assert locale_language("nl-NL", LANGUAGES) is None


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i + 1, subject="rd.evt.c.cu1.cv1", event=e) for i, e in enumerate(events)]


def test_intake_routes_by_the_decision_and_shows_its_evidence(detector: LanguageDetector) -> None:
    triage = Triage(identity="phone:+12125550123", language="en", skills={"billing": 1}, priority=0)
    events = plan(fold_history([]), "cu1", message("Hola, necesito un reembolso", "+12125550123"), triage, NOW,
                  language=detector)  # fmt: skip
    routing = events[-1]
    assert isinstance(routing, RoutingRequested)
    assert routing.requirements.language == "es"
    assert routing.language_reason is not None
    assert LanguageEvidence(source="phone", language="en", weight=1.2) in routing.language_reason.evidence


def test_the_profile_counts_as_a_strong_prior_not_an_override(detector: LanguageDetector) -> None:
    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    profile = fold_history(stored([CustomerProfileUpdated(at=NOW, customer_id="cu1", preferred_language="de")]), "cu1")
    short = plan(profile, "cu1", message("ok"), triage, NOW, language=detector)[-1]
    assert isinstance(short, RoutingRequested) and short.requirements.language == "de"
    long = plan(profile, "cu1", message("bonjour, mon colis n'est jamais arrive"), triage, NOW, language=detector)[-1]
    assert isinstance(long, RoutingRequested) and long.requirements.language == "fr"


def routed(first: str, detector: LanguageDetector) -> list[LogEvent]:
    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    return plan(fold_history([]), "cu1", message(first), triage, NOW, lambda p: p + "1", language=detector)


def test_a_later_confident_message_changes_the_language(detector: LanguageDetector) -> None:
    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    first = routed("hello", detector)
    assert first[-1].requirements.language == "en"  # type: ignore[union-attr]
    second = message("necesito ayuda con mi factura, me cobraron dos veces")
    events = plan(fold_history(stored(first)), "cu1", second, triage, NOW, language=detector)
    assert [type(e) for e in events] == [MessageReceived, ConversationLanguageChanged]
    change = events[-1]
    assert isinstance(change, ConversationLanguageChanged)
    assert (change.language, change.previous, change.conversation_id) == ("es", "en", "cv1")
    # Recorded once: planning the same message again (a redelivery) adds nothing; neither
    # does a later message in the language now required.
    history = fold_history(stored([*first, *events]))
    assert plan(history, "cu1", second, triage, NOW, language=detector) == []
    more = plan(history, "cu1", message("gracias"), triage, NOW, language=detector)
    assert [type(e) for e in more] == [MessageReceived]


def test_a_redelivery_after_a_cut_records_the_missing_change(detector: LanguageDetector) -> None:
    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    first = routed("hello", detector)
    second = message("wo ist meine bestellung, sie ist seit einer woche unterwegs")
    received, change = plan(fold_history(stored(first)), "cu1", second, triage, NOW, language=detector)
    again = plan(fold_history(stored([*first, received])), "cu1", second, triage, NOW, language=detector)
    assert again == [change]


def test_a_short_or_unsure_later_message_changes_nothing(detector: LanguageDetector) -> None:
    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    first = routed("my invoice is wrong", detector)
    for text in ("ok", "si", "merci", "👍"):
        events = plan(fold_history(stored(first)), "cu1", message(text), triage, NOW, language=detector)
        assert [type(e) for e in events] == [MessageReceived], text


def test_the_timeline_shows_the_evidence(detector: LanguageDetector) -> None:
    from services.timelines.fold_event import fold

    triage = Triage(identity="phone:+1", language="en", skills={}, priority=0)
    routing = plan(fold_history([]), "cu1", message("Hola, necesito un reembolso", "+12125550123"), triage, NOW,
                   language=detector)[-1]  # fmt: skip
    folded = fold(StoredEvent(seq=4, subject="rd.evt.c.cu1.cv1", event=routing))
    assert folded.entry is not None and folded.entry.detail is not None
    reason = folded.entry.detail["language_reason"]
    assert [(e["source"], e["language"]) for e in reason["evidence"]] == [("text", "es"), ("phone", "en")]


def test_a_message_text_is_scored_once(detector: LanguageDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    # Triage, the conversation's decision and the correction all ask for the same texts; the
    # model (py3langid, intake's dearest step) reads each text once, and the plans are the same.
    text = "necesito ayuda con mi factura, me cobraron dos veces"
    counted, fresh = (LanguageDetector(detector.languages, detector.default) for _ in range(2))
    first = routed("hello", counted)
    scored: list[str] = []
    model = counted._identifier

    class Counting:
        def rank(self, text: str) -> Any:
            scored.append(text)
            return model.rank(text)

    monkeypatch.setattr(counted, "_identifier", Counting())
    triage = Triage(identity="phone:+1", language=counted.detect(text), skills={}, priority=0)
    new = plan(fold_history([]), "cu1", message(text), triage, NOW, lambda p: p + "2", language=counted)
    later = plan(fold_history(stored(first)), "cu1", message(text), triage, NOW, lambda p: p + "2", language=counted)
    assert [type(e) for e in later] == [MessageReceived, ConversationLanguageChanged]
    assert scored == [text]  # "hello" was scored when it was routed
    assert new == plan(fold_history([]), "cu1", message(text), triage, NOW, lambda p: p + "2", language=fresh)
    assert later == plan(
        fold_history(stored(first)), "cu1", message(text), triage, NOW, lambda p: p + "2", language=fresh
    )


def test_a_huge_message_is_scored_by_its_opening_and_a_huge_word_costs_no_deletions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by an audit: one email holding a 100,000-letter run froze the whole `up` process
    for seconds (the one-edit lookup built every deletion of the word: its length squared), and
    a forged 600 KB text for about 100 s."""
    from services.intake import language_lexicon

    real = language_lexicon._deletions

    def deletions(word: str) -> Any:
        assert len(word) <= language_lexicon.LONGEST + 1, "a word no lexicon entry is near was edited"
        return real(word)

    monkeypatch.setattr(language_lexicon, "_deletions", deletions)
    assert language_lexicon.lookup("a" * 100_000) == (frozenset(), False)
    assert language_lexicon.lookup("reembolos")[0]  # a typo of a lexicon word still matches

    seen: list[int] = []
    detector = LanguageDetector(LANGUAGES, "en")
    identifier = detector._identifier

    class Measured:
        def rank(self, text: str) -> Any:
            seen.append(len(text))
            return identifier.rank(text)

    monkeypatch.setattr(detector, "_identifier", Measured())
    text = "Hola, necesito un reembolso de mi pedido, gracias. " + "x" * 600_000
    assert detector.detect(text) == "es"
    assert seen and max(seen) <= 4_000


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("مرحبا، لدي مشكلة في فاتورتي الأخيرة", "ar"),
        ("شكرا", "ar"),
        ("你好，我的账单有问题", "zh"),
        ("Здравствуйте, у меня проблема со счётом", "ru"),
        ("Спасибо", "ru"),
        ("こんにちは、請求書に問題があります", "ja"),
        ("Γεια σας, έχω ένα πρόβλημα", "el"),
    ],
)
def test_texts_in_other_scripts_are_read_when_their_language_is_served(text: str, language: str) -> None:
    # The lexicon reads Latin letters only: such texts were never scored, so a team serving
    # Arabic or Chinese had every Arabic or Chinese message routed in the default language.
    served = LanguageDetector((*LANGUAGES, "ar", "zh", "ru", "ja", "el"), "en")
    assert served.detect(text) == language
    assert served.decide([text]).language == language


@pytest.mark.parametrize(
    "text", ["مرحبا، لدي مشكلة في فاتورتي", "Γεια σας, έχω ένα πρόβλημα", "你好，我的账单有问题", "😀😀", "12345"]
)
def test_a_text_in_a_script_no_served_language_uses_gives_no_evidence(detector: LanguageDetector, text: str) -> None:
    # Scored against en..it alone, Greek read as Italian: nothing to go on, the default wins.
    assert detector.text_scores(text) == {}
    assert detector.decide([text]).language == "en"
