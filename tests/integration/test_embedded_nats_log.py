"""The embedded nats-server's log in the data dir stays bounded over a long run and restarts
(it was appended to by every start and every error line for as long as `relaydesk up` ran)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import nats
import pytest

from services.bus.auth import RoleCredentials
from services.bus.embedded import LOG_FILES_KEPT, EmbeddedNats

pytestmark = pytest.mark.integration

LIMIT = 4096


def log_files(store: Path) -> list[Path]:
    return sorted(store.glob("nats-server.log*"))


def garbage(port: int) -> None:
    """One client speaking no NATS: the server logs a parser error line for it."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.recv(4096)  # INFO
        s.sendall(b"NOT NATS AT ALL\r\n")
        with contextlib.suppress(OSError):  # its -ERR, or the connection already closed
            s.recv(4096)


def test_the_server_log_is_rotated_and_its_old_files_removed(tmp_path: Path) -> None:
    store = tmp_path / "js"
    store.mkdir()
    # What an earlier run left: a log appended to for months.
    (store / "nats-server.log").write_bytes(b"[1] old line\n" * (LIMIT // 4))
    server = EmbeddedNats(store_dir=store, log_size_limit=LIMIT)
    server.start()
    try:
        written = 0
        deadline = time.monotonic() + 30
        # Well past what the kept files can hold: ten times their room.
        while written < 10 * LIMIT * LOG_FILES_KEPT and time.monotonic() < deadline:
            garbage(server.port)
            written += 100  # a parser error line is longer than this
        assert written >= 10 * LIMIT * LOG_FILES_KEPT, "could not make the server log enough in time"
        deadline = time.monotonic() + 10
        while len(log_files(store)) > LOG_FILES_KEPT and time.monotonic() < deadline:
            time.sleep(0.05)
        files = log_files(store)
        assert 1 < len(files) <= LOG_FILES_KEPT, files
        # Each file is cut at the limit (a line may straddle it).
        assert sum(f.stat().st_size for f in files) <= LOG_FILES_KEPT * (LIMIT + 1024)
        assert "Client parser ERROR" in (store / "nats-server.log").read_text(errors="replace")
    finally:
        server.stop()


async def test_a_given_config_is_still_applied(tmp_path: Path) -> None:
    """The server config the log settings are written beside (users and permissions) holds."""
    credentials = RoleCredentials.ensure(tmp_path / "data", {})
    server = EmbeddedNats(store_dir=tmp_path / "js", config_file=credentials.write_server_config())
    server.start()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, max_reconnect_attempts=0, connect_timeout=2, allow_reconnect=False)
        nc = await nats.connect(server.url, user="tool", password=credentials.passwords["tool"])
        await nc.close()
    finally:
        server.stop()
