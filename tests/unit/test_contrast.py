"""Colour contrast of the agent console and the web chat widget, computed from their CSS (WCAG 2.2
1.4.3: 4.5:1 for text; 1.4.11: 3:1 for a control's edge, a state's dot and a focus ring).

Found by an accessibility audit: grey text of the timeline's folded facts (#777, 4.48:1), "none"
in the customer panel, an offline agent's status (#888, 3.54:1), a deactivated agent (#999,
2.85:1), the channel badges (white on #2a8 2.93:1, on #c63 3.81:1, on #778 4.39:1), the customer's
earlier conversations dimmed by opacity 0.6 (their small print at 2.52:1), the widget's message
waiting for its ack (opacity 0.6, 4.27:1) and the edge of its text box (#ccd, 1.59:1). A colour
changed below these ratios fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_CSS = ROOT / "services" / "console" / "static" / "console.css"
WIDGET_JS = ROOT / "connectors" / "chat" / "static" / "widget.js"

TEXT, UI = 4.5, 3.0


def rules(css: str) -> dict[str, dict[str, str]]:
    """selector -> its declarations (a rule of several selectors counts for each)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    out: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        decls = {}
        for decl in body.split(";"):
            name, _, value = decl.partition(":")
            if value:
                decls[name.strip()] = value.strip()
        for selector in selectors.split(","):
            out.setdefault(" ".join(selector.split()), {}).update(decls)
    return out


def widget_css() -> str:
    """The widget's stylesheet: the string pieces of its ``var CSS = "…" + "…";``."""
    source = WIDGET_JS.read_text(encoding="utf-8")
    block = source[source.index("var CSS =") : source.index(";\n", source.index("var CSS ="))]
    pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', block)
    return "".join(p.replace('\\"', '"') for p in pieces)


CONSOLE = rules(CONSOLE_CSS.read_text(encoding="utf-8"))
WIDGET = rules(widget_css())


def colour(sheet: dict[str, dict[str, str]], selector: str, prop: str) -> str:
    """The hex colour of ``prop`` (``color``, ``background``, ``border-top``, ``outline``…) of ``selector``."""
    value = sheet[selector][prop]
    found = re.findall(r"#[0-9a-fA-F]{3,6}\b", value)
    assert found, f"{selector} {{{prop}: {value}}} has no hex colour"
    return found[-1]


def rgb(hex_colour: str) -> tuple[float, float, float]:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255)


def luminance(c: tuple[float, float, float]) -> float:
    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def over(fg: tuple[float, float, float], bg: tuple[float, float, float], alpha: float) -> tuple[float, float, float]:
    return (
        alpha * fg[0] + (1 - alpha) * bg[0],
        alpha * fg[1] + (1 - alpha) * bg[1],
        alpha * fg[2] + (1 - alpha) * bg[2],
    )


def ratio(fg: str, bg: str, *, opacity: float = 1.0, behind: str = "#fff") -> float:
    """The contrast of ``fg`` on ``bg``; with ``opacity`` both are seen through it over ``behind``."""
    back = rgb(behind)
    a, b = over(rgb(fg), rgb(bg), 1.0), rgb(bg)
    if opacity < 1:
        a, b = over(over(rgb(fg), rgb(bg), 1.0), back, opacity), over(rgb(bg), back, opacity)
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_the_ratio_is_wcags() -> None:
    assert ratio("#000", "#fff") == pytest.approx(21.0)
    assert ratio("#767676", "#fff") == pytest.approx(4.54, abs=0.01)
    assert ratio("#777", "#fff") < TEXT  # the old folded facts


C = CONSOLE


def console_pairs() -> list[tuple[str, str, str, float]]:
    white = colour(C, "#detail", "background")
    panel = colour(C, "aside#customer-panel", "background")
    card = colour(C, "ul.work li", "background")
    table = colour(C, "table", "background")
    header = colour(C, "header", "background")
    page = colour(C, "body", "background")
    bubbles = [colour(C, s, "background") for s in ("ol#timeline li", "ol#timeline li.out", "ol#timeline li.note")]
    pairs = [
        ("page text", colour(C, "body", "color"), page, TEXT),
        ("header text", colour(C, "header", "color"), header, TEXT),
        ("header links", colour(C, "header nav a", "color"), header, TEXT),
        ("the sign-in hint", colour(C, "#login .hint", "color"), page, TEXT),
        ("customer panel: none", colour(C, "#customer-panel li.none", "color"), panel, TEXT),
        ("customer panel: terms", colour(C, "#customer-panel dt", "color"), panel, TEXT),
        ("customer panel: headings", colour(C, "#customer-panel h3", "color"), panel, TEXT),
        ("work list small print", colour(C, "ul.work li small", "color"), card, TEXT),
        ("offer countdown", colour(C, ".countdown", "color"), card, TEXT),
        ("offer countdown, last seconds", colour(C, ".countdown.urgent", "color"), card, TEXT),
        ("conversation facts", colour(C, "#conv-facts", "color"), white, TEXT),
        ("folded system facts", colour(C, "ol#timeline li.facts", "color"), white, TEXT),
        ("errors", colour(C, ".error", "color"), white, TEXT),
        ("primary buttons", colour(C, "button.primary", "color"), colour(C, "button.primary", "background"), TEXT),
        ("flags", colour(C, ".flag", "color"), colour(C, ".flag", "background"), TEXT),
        ("agent available", colour(C, "td.status.st-available", "color"), table, TEXT),
        ("agent away", colour(C, "td.status.st-away", "color"), table, TEXT),
        ("agent offline", colour(C, "td.status.st-offline", "color"), table, TEXT),
        ("agent deactivated", colour(C, "tr.inactive", "color"), table, TEXT),
        ("blocking reason", colour(C, "tr.blocked td.blocking", "color"), table, TEXT),
        ("window open", colour(C, "#window-note.open", "color"), colour(C, "#window-note.open", "background"), TEXT),
        (
            "window closed",
            colour(C, "#window-note.closed", "color"),
            colour(C, "#window-note.closed", "background"),
            TEXT,
        ),
        ("live dot, off", colour(C, ".dot", "background"), header, UI),
        ("live dot, on", colour(C, ".dot.on", "background"), header, UI),
        ("focus ring in the header", colour(C, "header :focus-visible", "outline"), header, UI),
        ("focus ring on a work item", colour(C, "ul.work li button.pick:focus-visible", "outline"), page, UI),
    ]
    badge = colour(C, ".ch", "color")
    for selector in (".ch", ".ch-email", ".ch-sms", ".ch-whatsapp", ".ch-chat", ".ch-social"):
        pairs.append((f"channel badge {selector}", badge, colour(C, selector, "background"), TEXT))
    for bubble in bubbles:
        pairs.append(("earlier conversation's text", colour(C, "ol#timeline li.other", "color"), bubble, TEXT))
        pairs.append(("timeline small print", colour(C, "ol#timeline li small", "color"), bubble, TEXT))
    return pairs


W = WIDGET


def widget_pairs() -> list[tuple[str, str, str, float]]:
    text = colour(W, ".rd-chat", "color")
    box = colour(W, ".rd-chat", "background")
    head = colour(W, ".rd-head", "background")
    send = colour(W, ".rd-form button", "background")
    failed = colour(W, ".rd-mine[data-state=failed]", "background")
    return [
        ("title bar", colour(W, ".rd-head", "color"), head, TEXT),
        ("minimize button", colour(W, ".rd-toggle", "color"), head, TEXT),
        ("send button", colour(W, ".rd-form button", "color"), send, TEXT),
        ("the visitor's message", text, colour(W, ".rd-mine", "background"), TEXT),
        ("a message not sent", text, failed, TEXT),
        ("'(not sent)'", colour(W, ".rd-mine[data-state=failed]::after", "color"), failed, TEXT),
        ("an agent's reply", text, colour(W, ".rd-reply", "background"), TEXT),
        ("notes", colour(W, ".rd-note", "color"), box, TEXT),
        ("conversation ended", colour(W, ".rd-closed", "color"), box, TEXT),
        ("text box", text, colour(W, ".rd-form textarea", "background"), TEXT),
        ("the text box's edge", colour(W, ".rd-form", "border-top"), box, UI),
        ("focus ring in the title bar", colour(W, ".rd-head :focus-visible", "outline"), head, UI),
        ("focus ring in the text box", colour(W, ".rd-form textarea:focus-visible", "outline"), box, UI),
        ("focus ring on Send", colour(W, ".rd-form button:focus-visible", "outline"), send, UI),
    ]


@pytest.mark.parametrize(("what", "fg", "bg", "least"), console_pairs(), ids=lambda v: v if isinstance(v, str) else "")
def test_console_colours_meet_wcag_aa(what: str, fg: str, bg: str, least: float) -> None:
    assert ratio(fg, bg) >= least, f"console {what}: {fg} on {bg} is {ratio(fg, bg):.2f}:1, below {least}:1"


@pytest.mark.parametrize(("what", "fg", "bg", "least"), widget_pairs(), ids=lambda v: v if isinstance(v, str) else "")
def test_widget_colours_meet_wcag_aa(what: str, fg: str, bg: str, least: float) -> None:
    assert ratio(fg, bg) >= least, f"widget {what}: {fg} on {bg} is {ratio(fg, bg):.2f}:1, below {least}:1"


def test_dimmed_text_is_dimmed_by_colour_not_by_an_opacity_that_fails() -> None:
    # The customer's earlier conversations: opacity 0.6 took their small print to 2.52:1.
    assert "opacity" not in C["ol#timeline li.other"]
    # The widget's message waiting for its ack is seen through its opacity on the white box.
    pending = W[".rd-mine[data-state=pending]"]
    alpha = float(pending["opacity"])
    text, bubble = colour(W, ".rd-chat", "color"), colour(W, ".rd-mine", "background")
    seen = ratio(text, bubble, opacity=alpha, behind=colour(W, ".rd-chat", "background"))
    assert seen >= TEXT, f"a pending message's text is {seen:.2f}:1 at opacity {alpha}"


def test_the_widget_sets_its_own_text_colour() -> None:
    # Inherited from the host page, a site's light text (for its dark theme) was unreadable on the white box.
    assert "color" in W[".rd-chat"] and "color" in W[".rd-form textarea"]
