"""``relaydesk dlq list|show --json`` fails with one JSON object on stdout (``{"error": {"code",
"message"}}``) besides its line on stderr and exit 1, whatever failed: a key not parked, a login
refused, a request this role may not make (found by an ops audit: stdout was empty, and a
refused request was a traceback of a timeout). Real nats-servers; one with the users and
permissions ``relaydesk up`` generates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events.parking import ParkedMessage, ParkingLot
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.auth import RoleCredentials
from services.bus.embedded import EmbeddedNats
from services.up import BUILT_IN_CONNECTORS, connector_channels
from tests.integration.dead_letters import cli

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("quiet_logging")]


async def _failed(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out = await cli(capsys, *argv)
    assert code == 1, out
    answer: dict[str, Any] = json.loads(out)  # one object on stdout, nothing else
    return answer["error"]


async def test_a_key_not_parked_is_a_not_found_error_object(
    private: tuple[str, NATS, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = private
    error = await _failed(capsys, "dlq", "show", "RD_INBOUND.987654", "--json", "--nats-url", url)
    assert error == {"code": "not_found", "message": "nothing parked under RD_INBOUND.987654"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[str, RoleCredentials, Path]]:
    data_dir = tmp_path / "data"
    credentials = RoleCredentials.ensure(data_dir, connector_channels(BUILT_IN_CONNECTORS))
    server = EmbeddedNats(store_dir=data_dir / "nats", config_file=credentials.write_server_config())
    server.start()
    try:
        yield server.url, credentials, data_dir
    finally:
        server.stop()


async def test_a_refused_login_and_a_refused_request_are_error_objects(
    secured: tuple[str, RoleCredentials, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nats

    url, credentials, data_dir = secured
    tool = await nats.connect(url, **credentials.auth("tool").connect_options())
    try:
        await ensure_streams(tool.jetstream())
        # Something to read: an empty bucket is answered from its stream's info, which anyone may ask.
        await ParkingLot(tool.jetstream()).park(
            ParkedMessage(
                stream="RD_INBOUND", seq=7, subject="rd.inbound.sms", kind="dead_letter", reader="intake",
                error="undecodable", parked_at=datetime.now(UTC), data=b"{",
            )
        )  # fmt: skip
    finally:
        await tool.close()
    monkeypatch.setenv("RELAYDESK_DATA_DIR", str(data_dir))

    monkeypatch.setenv("RELAYDESK_NATS_PASSWORD", "not-the-password")
    error = await _failed(capsys, "dlq", "list", "--json", "--nats-url", url, "--nats-user", "tool")
    assert error["code"] == "nats_credentials_refused", error
    assert "NATS refused the credentials (user tool)" in error["message"], error

    # A role that may not read rd_parked: the server refuses the request and answers nothing.
    monkeypatch.setenv("RELAYDESK_NATS_PASSWORD", credentials.passwords["connector-sms"])
    error = await _failed(capsys, "dlq", "list", "--json", "--nats-url", url, "--nats-user", "connector-sms")
    assert error["code"] == "permission_denied", error
    assert "run it as the tool role" in error["message"], error
