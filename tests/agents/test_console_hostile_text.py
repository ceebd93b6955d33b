"""Markup in everything a customer controls stays text in the console, in a real browser: a
display name, an email subject, a message, an attachment's file name and type, each written as
HTML that would run script if it were ever parsed as markup. Nothing runs, no element is made
from it, and the agent reads it as it was written. (An audit found no sink: the console builds
its DOM with textContent and its policy forbids inline script; this keeps it so.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from events.model import Attachment
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .console_pages import create_customer, fit_window, open_message
from .helpers import agent_system, agents_config, eventually
from .test_console_browser import click, visible

pytestmark = [pytest.mark.integration, needs_chromium]

NAME = "<img src=x id=pwn-name onerror=\"window.__pwned='name'\">"
SUBJECT = "<script id=pwn-subject>window.__pwned='subject'</script>"
TEXT = "<svg id=pwn-text onload=\"window.__pwned='text'\"></svg><a id=pwn-link href=javascript:alert(1)>x</a>"
FILE = '"><img src=x id=pwn-file onerror="window.__pwned=\'file\'">.html'

# What the page made of them: any element with a pwn- id, any javascript: link, the flag.
FOUND = """
return {
  pwned: window.__pwned || null,
  elements: Array.from(document.querySelectorAll('[id^="pwn-"]')).map((n) => n.id),
  scriptLinks: Array.from(document.querySelectorAll("a[href]")).filter((a) => a.protocol === "javascript:").length,
  title: document.querySelector("#conv-title").textContent,
  text: document.querySelector("#timeline li.in .text").textContent,
  files: Array.from(document.querySelectorAll("#timeline li.in .attachment")).map((a) => a.textContent),
};
"""


async def test_markup_a_customer_wrote_is_shown_as_text_and_never_runs(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        token, _ = await s.issue_token("ava")
        customer, cid = "cu-markup", "cv-markup-1"
        await create_customer(s.store, customer, "email:ann@example.com")
        await open_message(
            s.store,
            customer,
            cid,
            channel="email",
            contact="email:ann@example.com",
            sender=NAME,
            subject=SUBJECT,
            text=TEXT,
            attachment=Attachment(url="javascript:alert(1)", name=FILE, content_type="text/html"),
        )
        await eventually(lambda: s.conversation(cid, "assigned"))

        def look() -> dict[str, Any]:
            fit_window(browser)
            browser.get(s.api + "/console")
            visible(browser, "#token").send_keys(token)
            click(browser, "#login-form button")
            click(browser, f'#assigned li[data-id="{cid}"]')
            visible(browser, "#conv-title", "(assigned)")
            visible(browser, "#timeline li.in .text", "<svg")
            found: dict[str, Any] = browser.execute_script(FOUND)
            found["list"] = visible(browser, f'#assigned li[data-id="{cid}"]').text
            return found

        seen = await in_thread(look)
        assert seen["pwned"] is None and seen["elements"] == [] and seen["scriptLinks"] == 0, seen
        assert NAME in seen["title"], seen["title"]
        assert seen["text"] == TEXT
        assert any(FILE in f for f in seen["files"]), seen["files"]
        assert SUBJECT in seen["list"], seen["list"]
