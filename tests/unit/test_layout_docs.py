"""README *Layout* lists every stream and bucket Relaydesk makes (``events.streams.stores``):
found by a review, ``rd_canned_replies`` (the canned replies kept by the API) was made and
given permissions but named in no table an operator backs up or grants from."""

from __future__ import annotations

from pathlib import Path

from events.streams import stores

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_store_is_in_the_readme_layout_table() -> None:
    text = README.read_text()
    start = text.index("## Layout")
    layout = text[start : text.index("\n## ", start + 1)]
    names = {spec.name.removeprefix("KV_").removeprefix("OBJ_") for spec in stores()}
    missing = sorted(name for name in names if f"| `{name}` |" not in layout)
    assert not missing, f"README Layout names no {missing}"
