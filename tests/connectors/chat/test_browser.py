"""The widget in a real browser (headless Chromium: see tests/browser.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from connectors.chat.connector import WebChatConnector
from connectors.sdk.conformance import read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply
from services.bus.embedded import EmbeddedNats, free_port
from tests.browser import in_thread, needs_chromium
from tests.integration.system import accept_if_offered, eventually, running_system, system_config

from .helpers import WIDGET_KEY, chat_config

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, needs_chromium]


def wait_for(driver: Any, css: str, text: str | None = None, timeout: float = 15.0) -> Any:
    def found(d: Any) -> Any:
        for node in d.find_elements(By.CSS_SELECTOR, css):
            if text is None or node.text == text:
                return node
        return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(found, f"no {css!r} with {text!r}")


async def test_widget_sends_is_acked_and_shows_the_agent_reply(
    own_nats: tuple[EmbeddedNats, NATS], browser: Any
) -> None:
    _, nc = own_nats
    connector = WebChatConnector.from_config(chat_config(outbound=True, outbound_fetch_timeout=0.5))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    try:
        await in_thread(browser.get, url + "/")
        await in_thread(wait_for, browser, "#rd-chat-status", "online")

        text = "Hello from Chromium " + uuid.uuid4().hex[:6]
        box = await in_thread(browser.find_element, By.CSS_SELECTOR, "#rd-chat-input")
        await in_thread(box.send_keys, text)
        await in_thread(lambda: browser.find_element(By.CSS_SELECTOR, "#rd-chat-send").click())
        mine = await in_thread(wait_for, browser, '.rd-mine[data-state="acked"]', text)
        assert await in_thread(mine.get_attribute, "data-seq") == "1"

        # Acknowledged means on the stream: the event is there, from this visitor.
        [event] = [p for p in await read_inbound(nc.jetstream(), "chat") if p.message.text == text]
        address = event.message.sender
        assert address.startswith("visitor:")

        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:12],
            customer_id="cus_" + uuid.uuid4().hex[:12],
            channel="chat",
            reply_id="rep_" + uuid.uuid4().hex[:12],
            contact=address,
            text="An agent answers <b>not bold</b>",
            metadata={"agent_name": "Ava S."},  # the API sets it: who answers
        )
        await nc.jetstream().publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        node = await in_thread(wait_for, browser, ".rd-reply", reply.text)
        assert await in_thread(node.get_attribute, "data-seq") == "2"
        assert await in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, ".rd-reply b")) == []  # text, not HTML

        assert await in_thread(node.get_attribute, "title") == "Ava S."

        # The agent resolves: the API queues a notice (twice here, as two API processes would).
        notice = DeliverReply(
            conversation_id=reply.conversation_id,
            customer_id=reply.customer_id,
            channel="chat",
            reply_id=f"resolved:{reply.conversation_id}",
            contact=address,
            text="",
            notice="resolved",
        )
        for _ in range(2):
            await nc.jetstream().publish(subjects.outbound("chat"), encode(notice))
        closed = await in_thread(wait_for, browser, ".rd-closed")
        assert "conversation has ended" in await in_thread(lambda: closed.text)
        assert await in_thread(closed.get_attribute, "data-seq") == "3"

        # A reload keeps the visitor (localStorage) and shows the conversation again.
        await in_thread(browser.refresh)
        await in_thread(wait_for, browser, '.rd-mine[data-state="acked"]', text)
        await in_thread(wait_for, browser, ".rd-reply", reply.text)
        await in_thread(wait_for, browser, ".rd-closed")
        assert len(await in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, ".rd-closed"))) == 1
        # forget() (a site's logout, a shared computer): the next page load is a new visitor.
        await in_thread(browser.execute_script, "window.chat.forget()")
        assert await in_thread(browser.execute_script, "return Object.keys(localStorage)") == []
        await in_thread(browser.refresh)
        await in_thread(wait_for, browser, "#rd-chat-status", "online")
        assert await in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, ".rd-mine, .rd-reply")) == []
    finally:
        await connector.stopping()
        await runtime.stop()


async def test_widget_embedded_on_another_origin(own_nats: tuple[EmbeddedNats, NATS], browser: Any) -> None:
    """The script-tag embed on a site of another origin: CORS preflight, allowed Origin on the
    socket, auto-mount from ``data-widget-key``; a site that is not allowed gets no chat."""
    _, nc = own_nats
    site = web.Application()
    page: dict[str, str] = {}

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=page["html"], content_type="text/html")

    site.router.add_get("/", serve)
    runner = web.AppRunner(site, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    site_port = runner.addresses[0][1]
    site_origin = f"http://localhost:{site_port}"  # another host and port than the connector's
    connector = WebChatConnector.from_config(chat_config(outbound=False, allowed_origins=[site_origin]))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    page["html"] = (
        "<!doctype html><html><head><title>shop</title></head><body><h1>Shop</h1>"
        f'<script src="{url}/widget.js" data-widget-key="{WIDGET_KEY}" async></script></body></html>'
    )
    try:
        await in_thread(browser.get, site_origin + "/")
        await in_thread(wait_for, browser, "#rd-chat-status", "online")
        box = await in_thread(browser.find_element, By.CSS_SELECTOR, "#rd-chat-input")
        await in_thread(box.send_keys, "from the shop\n")  # Enter sends
        await in_thread(wait_for, browser, '.rd-mine[data-state="acked"]', "from the shop")
        assert [p.message.text for p in await read_inbound(nc.jetstream(), "chat")] == ["from the shop"]

        # The same page on an origin that is not allowed: no session, nothing sent.
        await in_thread(browser.get, f"http://127.0.0.1:{site_port}/")
        await in_thread(wait_for, browser, "#rd-chat-status", "offline")
    finally:
        await connector.stopping()
        await runtime.stop()
        await runner.cleanup()


async def test_a_visitor_is_routed_to_an_agent_and_sees_the_reply(
    tmp_path: Path, clean_nats: EmbeddedNats, browser: Any
) -> None:
    """The whole road with every service running: the widget's message becomes a conversation
    routed to an agent, whose reply through the API appears in the widget."""
    config = system_config(tmp_path, clean_nats.url)
    chat_port = free_port()
    config.connectors["chat"] = chat_config(port=chat_port, outbound_fetch_timeout=0.5)
    async with running_system(config, clean_nats) as system:
        await in_thread(browser.get, f"http://127.0.0.1:{chat_port}/")
        await in_thread(wait_for, browser, "#rd-chat-status", "online")
        text = "My invoice is wrong " + uuid.uuid4().hex[:6]
        box = await in_thread(browser.find_element, By.CSS_SELECTOR, "#rd-chat-input")
        await in_thread(box.send_keys, text + "\n")
        await in_thread(wait_for, browser, '.rd-mine[data-state="acked"]', text)

        async def routed_chat() -> dict[str, Any] | None:
            status, body = await system.get("/v1/conversations")
            assert status == 200, body
            chats = [c for c in body["conversations"] if c["channel"] == "chat" and c["agent_id"]]
            return chats[0] if chats else None

        conv = await accept_if_offered(system, await eventually(routed_chat))
        assert conv["agent_id"] == "ava"  # English billing: the frontline billing agent
        status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", {"text": "Ava here, checking it."})
        assert status == 202, body
        await in_thread(wait_for, browser, ".rd-reply", "Ava here, checking it.")


# The right edge of the rightmost character of the visitor's own text in the failed bubble, and
# the bubble's inner right edge (where " (not sent)" ends).
TEXT_AND_BUBBLE_RIGHT = """
const bubble = document.querySelector('.rd-mine[data-state="failed"]');
const walker = document.createTreeWalker(bubble, NodeFilter.SHOW_TEXT);
let right = 0;
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  for (let i = 0; i < t.data.length; i++) {
    const r = document.createRange();
    r.setStart(t, i); r.setEnd(t, i + 1);
    right = Math.max(right, r.getBoundingClientRect().right);
  }
}
const box = bubble.getBoundingClientRect();
return [right, box.right - parseFloat(getComputedStyle(bubble).paddingRight)];
"""


async def test_a_right_to_left_override_in_a_message_does_not_reverse_what_the_widget_adds(
    own_nats: tuple[EmbeddedNats, NATS], browser: Any
) -> None:
    """A visitor's text ending in U+202E (RIGHT-TO-LEFT OVERRIDE) reversed the " (not sent)" the
    widget puts after a refused message, and moved it before the text's own words; an Arabic
    agent reply ran left to right. Each bubble's text is now an isolate with dir=auto."""
    _, nc = own_nats
    connector = WebChatConnector.from_config(chat_config(outbound=True, max_message_bytes=24))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    try:
        await in_thread(browser.get, url + "/")
        await in_thread(wait_for, browser, "#rd-chat-status", "online")
        hello = "hi " + uuid.uuid4().hex[:6]
        await in_thread(browser.execute_script, "window.chat.send(arguments[0])", hello)
        await in_thread(wait_for, browser, '.rd-mine[data-state="acked"]', hello)
        [event] = [p for p in await read_inbound(nc.jetstream(), "chat") if p.message.text == hello]
        # Over 24 bytes: refused for its size, so the bubble says " (not sent)" after it.
        text = "ok \u202ezyx wvu tsr qpo nml"
        await in_thread(browser.execute_script, "window.chat.send(arguments[0])", text)
        await in_thread(wait_for, browser, '.rd-mine[data-state="failed"]')
        right, inner_right = await in_thread(browser.execute_script, TEXT_AND_BUBBLE_RIGHT)
        # " (not sent)" is drawn after the visitor's words, not in the middle of them.
        assert right < inner_right - 20, (right, inner_right)

        # An agent's reply in Arabic runs right to left (the widget's page is left to right).
        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:12],
            customer_id="cus_" + uuid.uuid4().hex[:12],
            channel="chat",
            reply_id="rep_" + uuid.uuid4().hex[:12],
            contact=event.message.sender,
            text="شكرا لك! طلبك رقم 42 في الطريق.",
        )
        await nc.jetstream().publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        node = await in_thread(wait_for, browser, ".rd-reply", reply.text)
        assert await in_thread(browser.execute_script, "return getComputedStyle(arguments[0]).direction", node) == "rtl"
    finally:
        await connector.stopping()
