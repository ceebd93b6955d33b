"""The widget with a keyboard and a screen reader (headless Chromium: see tests/browser.py).

Found by an accessibility audit (WCAG 2.2 AA): the text box was named by its placeholder only
(3.3.2, 4.1.2), the message list was no log and the widget no landmark (1.3.1), whether the chat
was online was not said (4.1.3), who wrote a message was told by colour and side only (1.3.1),
and a widget fixed over the page could not be minimized, so it could hide what had the page's
focus (2.4.11)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from connectors.chat.connector import WebChatConnector
from connectors.sdk.conformance import read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply
from services.bus.embedded import EmbeddedNats
from tests.browser import in_thread, needs_chromium

from .helpers import chat_config
from .test_browser import wait_for

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, needs_chromium]


def has_focus(driver: Any, css: str) -> bool:
    return bool(driver.execute_script("return document.activeElement.matches(arguments[0])", css))


def spoken_names(driver: Any) -> list[str]:
    """The names in Chromium's accessibility tree (what a screen reader reads)."""
    tree = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})
    return [str((node.get("name") or {}).get("value") or "") for node in tree["nodes"]]


async def test_the_widget_by_keyboard_and_screen_reader(own_nats: tuple[EmbeddedNats, NATS], browser: Any) -> None:
    _, nc = own_nats
    connector = WebChatConnector.from_config(chat_config(outbound=True, outbound_fetch_timeout=0.5))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    try:
        await in_thread(browser.get, url + "/")
        await in_thread(wait_for, browser, "#rd-chat-status", "online")

        def named_and_in_order() -> None:
            def node(css: str) -> Any:
                return browser.find_element(By.CSS_SELECTOR, css)

            assert node(".rd-chat").aria_role == "region"
            assert node(".rd-chat").accessible_name == "Chat with us"
            assert node("#rd-chat-status").get_attribute("role") == "status"
            assert node("#rd-chat-log").aria_role == "log"
            assert node("#rd-chat-log").accessible_name == "Messages"
            assert node("#rd-chat-input").accessible_name == "Message"
            assert node("#rd-chat-send").accessible_name == "Send"
            assert node("#rd-chat-toggle").accessible_name == "Minimize chat"
            assert node("#rd-chat-toggle").get_attribute("aria-expanded") == "true"
            # Tab order: minimize, the log (scrollable by keys), the text box, Send.
            browser.execute_script("document.getElementById('rd-chat-toggle').focus()")
            for css in ("#rd-chat-log", "#rd-chat-input", "#rd-chat-send"):
                ActionChains(browser).send_keys(Keys.TAB).perform()
                assert has_focus(browser, css), css
            # Back to the box, write, Enter sends; the focus stays in the box.
            ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
            assert has_focus(browser, "#rd-chat-input")
            ActionChains(browser).send_keys("where is my order\n").perform()
            wait_for(browser, '.rd-mine[data-state="acked"]', "where is my order")
            assert has_focus(browser, "#rd-chat-input")
            # Who wrote it is read out, not only shown by colour and side.
            assert "You:" in spoken_names(browser)

        await in_thread(named_and_in_order)

        def minimize_by_keyboard() -> None:
            browser.execute_script("document.getElementById('rd-chat-toggle').focus()")
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            toggle = browser.find_element(By.ID, "rd-chat-toggle")
            assert toggle.get_attribute("aria-expanded") == "false"
            assert toggle.accessible_name == "Open chat"
            assert not browser.find_element(By.ID, "rd-chat-log").is_displayed()
            assert has_focus(browser, "#rd-chat-toggle")

        await in_thread(minimize_by_keyboard)

        # A reply while minimized: the status (a live region, visible in the title bar) says so.
        sender = await visitor_address(nc)
        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:12],
            customer_id="cus_" + uuid.uuid4().hex[:12],
            channel="chat",
            reply_id="rep_" + uuid.uuid4().hex[:12],
            contact=sender,
            text="It ships tomorrow.",
            metadata={"agent_name": "Ava S."},
        )
        await nc.jetstream().publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        await in_thread(wait_for, browser, "#rd-chat-status", "1 new message")

        def open_again() -> None:
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            toggle = browser.find_element(By.ID, "rd-chat-toggle")
            assert toggle.get_attribute("aria-expanded") == "true"
            WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "rd-chat-log").is_displayed())
            wait_for(browser, "#rd-chat-status", "online")
            wait_for(browser, ".rd-reply", "It ships tomorrow.")
            assert "Agent:" in spoken_names(browser)

        await in_thread(open_again)
    finally:
        await connector.stopping()
        await runtime.stop()


async def visitor_address(nc: NATS) -> str:
    """The address the connector gave this browser's visitor (on its first message)."""
    [event, *_] = await read_inbound(nc.jetstream(), "chat")
    return str(event.message.sender)


async def test_the_floating_widget_fits_a_narrow_screen(own_nats: tuple[EmbeddedNats, NATS], browser: Any) -> None:
    """Mounted without a container it floats over the page: on a 320 px wide screen it stays
    inside it (WCAG 1.4.10), and its title bar, minimized, leaves the page free."""
    _, nc = own_nats
    connector = WebChatConnector.from_config(chat_config(outbound=False))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    try:

        def narrow() -> None:
            browser.set_window_size(360, 640)
            browser.get(url + "/")
            wait_for(browser, "#rd-chat-status", "online")
            browser.execute_script("window.chat.close(); document.body.style.margin = '0';")
            browser.execute_script(
                "window.floating = RelaydeskChat.mount({widgetKey: WIDGET_KEY, server: location.origin});"
            )
            width = browser.execute_script("return document.documentElement.clientWidth")
            box = browser.execute_script(
                "const r = document.querySelector('.rd-floating').getBoundingClientRect(); return [r.left, r.right];"
            )
            assert box[0] >= 0 and box[1] <= width, (box, width)
            browser.find_element(By.CSS_SELECTOR, ".rd-floating .rd-toggle").click()
            height = browser.execute_script(
                "return document.querySelector('.rd-floating').getBoundingClientRect().height"
            )
            assert height < 60, height

        await in_thread(narrow)
    finally:
        await connector.stopping()
        await runtime.stop()
