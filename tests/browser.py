"""Headless Chromium from Debian (``apt-get install -y chromium chromium-driver``), driven by
Selenium, for the tests that look at a page as a person would. No browser is downloaded;
without Chromium those tests skip and say how to get it. Selenium's calls block, so they run
in a thread while the system under test serves on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = os.environ.get("RELAYDESK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELAYDESK_CHROMEDRIVER", "/usr/bin/chromedriver")

T = TypeVar("T")


def chromium_binary() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None or not os.access(CHROMEDRIVER, os.X_OK),
    reason=f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium chromium-driver",
)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


@contextlib.asynccontextmanager
async def headless_chromium(profile_dir: Path) -> AsyncIterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(chromium_binary())
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # This machine's network is closed: no background calls home.
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    driver = await in_thread(lambda: webdriver.Chrome(options=options, service=Service(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        await in_thread(driver.quit)
