"""Real ``relaydesk <command>`` processes for the tests that run replicas side by side, kill one
and read what each said: one log file per process, its JSON lines counted by event."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class CliProcesses:
    """Processes started by name, each writing its log to ``<log_dir>/<name>.log``."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, stop_wait_s: float = 15.0) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.stop_wait_s = stop_wait_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """``relaydesk <args>`` (``python -m services.cli``) as ``name``; ``env`` adds to the
        processes' environment for this one."""
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self._logs[name] = out
        cmd = [sys.executable, "-m", "services.cli", *args]
        self.procs[name] = subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)

    def said(self, name: str, event: str) -> int:
        """How many log lines of ``name`` are ``event``."""
        log = self.log_dir / f"{name}.log"
        return log.read_text().count(f'"event": "{event}"') if log.exists() else 0

    def kill(self, name: str) -> None:
        """``kill -9``: nothing of the process's own clean-up runs."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        for out in self._logs.values():
            out.close()
        self._logs.clear()
