"""Right-to-left text and bidi controls in what customers write, in a real browser: a display
name ending in U+202E (RIGHT-TO-LEFT OVERRIDE) reversed the rest of the conversation's title
(" (assigned)" read ")dengissa(" ), because nothing isolated a customer's text from the console's
own. Every customer-written string is now an isolate that takes its direction from its own text."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import create_customer, fit_window, open_message
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, visible

pytestmark = [pytest.mark.integration, needs_chromium]

RLO = "\u202e"

# The left edge of each character of ``after`` in the first text node of ``node`` holding it.
LEFT_EDGES = """
const [node, after] = arguments;
const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  const at = t.data.indexOf(after);
  if (at < 0) continue;
  const out = [];
  for (let i = 0; i < after.length; i++) {
    const r = document.createRange();
    r.setStart(t, at + i); r.setEnd(t, at + i + 1);
    out.push(r.getBoundingClientRect().left);
  }
  return out;
}
return null;
"""

# The computed ``unicode-bidi`` and ``direction`` of the node ``arguments[0]`` selects, or null.
STYLE = """
const n = document.querySelector(arguments[0]);
if (!n) return null;
const c = getComputedStyle(n);
return [c.unicodeBidi, c.direction];
"""


async def test_a_right_to_left_override_in_a_customers_name_reorders_only_the_name(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        customer, cid = "cu-bidi", "cv-bidi-1"
        await create_customer(s.store, customer, "email:ann@example.com")
        await open_message(
            s.store,
            customer,
            cid,
            channel="email",
            contact="email:ann@example.com",
            sender=f"Ann {RLO}Smith",
            subject=f"Order {RLO}42 refund",
            text="مرحبا، طلبي رقم 42 لم يصل",  # Arabic: "hello, my order number 42 has not arrived"
        )
        await eventually(lambda: s.conversation(cid, "assigned"))

        def look() -> dict[str, Any]:
            fit_window(browser)
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(token)
            click(browser, "#login-form button")
            click(browser, f'#assigned li[data-id="{cid}"]')
            title = visible(browser, "#conv-title", "(assigned)")
            visible(browser, "#timeline li .text", "مرحبا")
            style = STYLE
            return {
                "after_name": browser.execute_script(LEFT_EDGES, title, " (assigned)"),
                "name": browser.execute_script(style, "#conv-title .name"),
                "list_name": browser.execute_script(style, f'#assigned li[data-id="{cid}"] .name'),
                "subject": browser.execute_script(style, f'#assigned li[data-id="{cid}"] .subject'),
                "text": browser.execute_script(style, "#timeline li.in .text"),
            }

        seen = await in_thread(look)
        edges = seen["after_name"]
        assert edges is not None
        # " (assigned)" reads left to right: each character right of the one before it.
        assert all(a < b for a, b in itertools.pairwise(edges[1:])), edges
        # Every customer-written string is an isolate; the Arabic message runs right to left.
        for key in ("name", "list_name", "subject", "text"):
            assert seen[key] is not None and seen[key][0] == "isolate", (key, seen[key])
        assert seen["text"] is not None and seen["text"][1] == "rtl", seen["text"]
