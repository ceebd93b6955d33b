"""HTML mail bodies to plain text with the standard library (no extra dependency)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {
    "p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "ul", "ol", "pre", "hr", "section", "article", "header", "footer", "address", "dd", "dt",
}  # fmt: skip
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []  # (quote depth, text)
        self.current: list[str] = []
        self.skip = 0
        self.quote = 0
        self.pre = 0
        self.href: str | None = None
        self.link_text: list[str] = []

    def _flush(self, *, force: bool = False) -> None:
        text = "".join(self.current)
        if not self.pre:
            text = _SPACES.sub(" ", text).strip()
        if text or force:
            self.lines.append((self.quote, text))
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "blockquote":
            self._flush()
            self.quote += 1
        elif tag in _BLOCK:
            self._flush(force=tag == "br")
            if tag == "li":
                self.current.append("- ")
            if tag == "pre":
                self.pre += 1
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []
        elif tag in ("td", "th"):
            self.current.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.current.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._flush()
            self.quote = max(0, self.quote - 1)
        elif tag in _BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._flush()
        elif tag == "a":
            text = "".join(self.link_text).strip()
            href = self.href or ""
            if href.startswith(("http://", "https://")) and href != text:
                self.current.append(f" ({href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.current.append(data if self.pre else data.replace("\n", " "))
        if self.href is not None:
            self.link_text.append(data)


# The most HTML ``html_to_text`` is given. Its pure-Python parser reads 1-4 MB a second: a 5 MB
# HTML-only body held the event loop for 4.7 s. The text is cut at ``max_text_chars`` (100,000)
# anyway, and mail HTML runs 2-5 times its text (Outlook's ~2.2): 500,000 characters still give
# the whole default text for HTML up to 5 times its text, in at most a few tenths of a second.
MAX_HTML_CHARS = 500_000


def cap_html(html: str, limit: int = MAX_HTML_CHARS) -> str:
    """``html`` cut to at most ``limit`` characters; a tag the limit falls in is left out whole."""
    if len(html) <= limit:
        return html
    start = html.rfind("<", 0, limit)
    return html[: start if start > html.rfind(">", 0, limit) else limit]


def html_to_text(html: str, *, partial: bool = False) -> str:
    """``html`` as plain text. ``partial``: the HTML was cut off (``cap_html``), so what its end
    leaves open (a comment, a style block, a half entity) is dropped instead of read as text."""
    parser = _TextParser()
    parser.feed(html)
    if not partial:
        parser.close()
    parser._flush()
    out: list[str] = []
    for depth, line in parser.lines:
        if not line and (not out or not out[-1]):
            continue  # collapse blank runs
        out.append(("> " * depth) + line if depth else line)
    return "\n".join(out).strip()
