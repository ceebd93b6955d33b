"""``GET /docs`` is served on the console's origin: a script it loads from elsewhere runs with
the signed-in console's rights, so it must be the exact file reviewed, not whatever a CDN serves."""

from __future__ import annotations

from html.parser import HTMLParser

from services.api.docs import page


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))


def test_every_script_the_docs_page_loads_from_elsewhere_is_pinned_by_its_hash() -> None:
    parser = _Scripts()
    parser.feed(page())
    external = [s for s in parser.scripts if (s.get("src") or "").startswith(("http:", "https:", "//"))]
    assert external, "the page loads Redoc"
    for script in external:
        assert (script.get("integrity") or "").startswith("sha384-"), script
        assert script.get("crossorigin") == "anonymous", script  # a cross-origin hash check needs CORS
