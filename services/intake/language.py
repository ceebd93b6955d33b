"""Language detection, offline: py3langid's bundled model, limited to the languages the
team serves (unrestricted, short texts drift to rare languages)."""

from __future__ import annotations

from collections.abc import Sequence

from py3langid.langid import MODEL_FILE, LanguageIdentifier


class LanguageDetector:
    def __init__(self, languages: Sequence[str], default: str, min_confidence: float = 0.6) -> None:
        self.default = default
        self.min_confidence = min_confidence
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._identifier.set_languages(list(dict.fromkeys([*languages, default])))

    def detect(self, text: str) -> str:
        """The text's language, or the default when the text is too short to tell."""
        if len(text.strip()) < 3:
            return self.default
        language, confidence = self._identifier.classify(text)
        return str(language) if confidence >= self.min_confidence else self.default
