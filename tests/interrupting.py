"""Helpers for tests that stop a real ``relaydesk`` tool with Ctrl-C or SIGTERM (Linux /proc).

A signal is sent only once the tool is held where nothing can answer it (its NATS server, and
a rebuild's writer process, stopped with SIGSTOP) and idle: Python 3.11's ``asyncio.wait_for``
drops a cancellation that comes in the same loop turn as the answer it waited for, so a
signal sent while answers flow could, rarely, be missed by a test that sends it once.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

RELAYDESK = str(Path(sys.executable).with_name("relaydesk"))
# x86_64 epoll_wait, epoll_pwait, epoll_pwait2 (when /proc/PID/wchan does not name the function)
_EPOLL_SYSCALLS = ("232", "281", "441")


def default_sigint() -> None:
    """``preexec_fn``: Ctrl-C as a terminal delivers it (a shell without job control starts
    background commands with SIGINT ignored, and Python keeps it so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def asleep_in_epoll(pid: int) -> bool:
    """Whether ``pid``'s main thread waits in epoll: its event loop idle, every callback run."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "epoll" in wchan or number in _EPOLL_SYSCALLS


def signal_pending(pid: int) -> bool:
    """Whether a signal sent to ``pid`` waits to be delivered (to the process or its main thread)."""
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    return int(status["SigPnd"], 16) != 0 or int(status["ShdPnd"], 16) != 0


def handled(pid: int) -> bool:
    """The signal sent to ``pid`` was delivered and its event loop, having run what it scheduled
    (the cancellation), waits again."""
    return not signal_pending(pid) and asleep_in_epoll(pid)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(n) for n in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    """``pid`` ended (a zombie not yet reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def no_traceback(err: str) -> bool:
    return not any(word in err for word in ("Traceback", "CancelledError", "KeyboardInterrupt"))
