"""A flood of inbound mail does not hold the replies going out (the flood audit).

Inbound mail is parsed in a thread, and the replies' SMTP sends run in one too: both shared
asyncio's default executor (6 threads on two cores), so a mail loop's or a hostile sender's
parses queued every reply to every other customer behind them."""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from connectors.email import connector as email_connector

from .helpers import _send, mail
from .test_outbound import reply_to, world

pytestmark = pytest.mark.integration


async def test_replies_go_out_while_a_flood_of_mail_is_being_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Semaphore(0), threading.Event()
    real = email_connector.parse_email

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        entered.release()
        release.wait(30)  # a crafted mail costs seconds; a flood of them holds every parse thread
        return real(*args, **kwargs)

    monkeypatch.setattr(email_connector, "parse_email", slow_parse)
    async with world(tmp_path) as w:
        assert w.connector.smtp_address is not None
        host, port = w.connector.smtp_address
        # The flood's clients in threads of their own: in the default executor (smtp_send) they
        # would hold this test's threads, not the connector's.
        clients = ThreadPoolExecutor(40)
        loop = asyncio.get_running_loop()
        flood = [
            loop.run_in_executor(
                clients,
                functools.partial(
                    _send, host, port, mail(uuid.uuid4().hex, n=n).as_bytes(), "bot@loop.test", ["support@support.test"]
                ),
            )
            for n in range(40)
        ]
        try:
            assert await asyncio.to_thread(entered.acquire, True, 10)  # parses are under way
            reply = reply_to("<c1@customer.test>")
            result = await asyncio.wait_for(w.connector.deliver(reply), 15)
            assert result.ok, result
            [got] = await w.sink.wait_for(1)
            assert got.rcpt_tos == ["ann@customer.test"]
            assert not release.is_set()  # sent while the flood's parses still held their threads
        finally:
            release.set()
            for done in await asyncio.gather(*flood, return_exceptions=True):
                assert not isinstance(done, BaseException), done
            clients.shutdown()
