"""The data dir: made 0700 by every process that needs it (``make_data_dir``), the secrets
kept in it (the operator token, the signing key: ``read_kept`` / ``keep``), and one
``relaydesk up`` per data dir: an exclusive ``flock`` on ``<data dir>/up.lock``, held for the
life of the process.

Two instances on one data dir would run two nats-servers on one JetStream store (which can
corrupt it) and remove each other's files (``nats-url``). The embedded nats-server inherits
the locked descriptor, and the kernel releases the lock once both have ended, however they
end (``kill -9`` too): never a stale lock to clean up, and never a new server on a store the
old one is still flushing. The pid written into the file only names the holder in the refusal."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LOCK_FILE = "up.lock"


class DataDirUnusable(RuntimeError):
    """The data dir cannot be created or written (a read-only mount, no permission)."""


def make_data_dir(data_dir: Path) -> Path:
    """``data_dir``, created 0700 if missing (README *Files*), or ``DataDirUnusable`` with the
    reason in a sentence rather than a traceback."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError as err:  # mkdir says "File exists" of a file in the way
        raise DataDirUnusable(f"the data dir {data_dir} is a file, not a directory") from err
    except OSError as err:
        raise DataDirUnusable(f"cannot create the data dir {data_dir}: {err.strerror or err}") from err
    return data_dir


def read_kept(path: Path, what: str, instead: str) -> str | None:
    """A secret kept in the data dir (the operator token, the signing key): None when there is
    none yet, ``DataDirUnusable`` naming the fault when the file cannot serve (a directory, no
    permission, empty: a start that crashed while writing it). An empty token file used to
    start the API with a token nothing matches, locking the operator out without a word."""
    remedy = f"remove it to have a new one made, or set {instead}"
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DataDirUnusable(f"cannot read the {what} {path}: {why}; {remedy}") from err
    if not value:
        raise DataDirUnusable(f"the {what} {path} is empty; {remedy}")
    return value


def keep(path: Path, value: str, what: str) -> str:
    """``value`` written 0600 at ``path``, whole under another name first, then linked into
    place: a reader sees no file or the whole value, and of two concurrent writers the first
    to link wins (its value is returned)."""
    draft = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            return read_kept(path, what, "its setting") or value  # another start linked first
        finally:
            draft.unlink()
    except OSError as err:
        raise DataDirUnusable(f"cannot write the {what} {path}: {err.strerror or err}") from err
    return value


class DataDirBusy(RuntimeError):
    """Another process holds the data dir's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        if pid is not None and not _alive(pid):  # killed: its nats-server, stopping, holds the lock
            holder += ", gone; its nats-server is still stopping"
        super().__init__(
            f"another `relaydesk up` ({holder}) is running with data dir {data_dir}; "
            "stop it first, or give this one another --data-dir / RELAYDESK_DATA_DIR"
        )
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """The held lock (the open file descriptor that holds it)."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = fd

    def fileno(self) -> int:
        """The descriptor holding the lock: a child given it (nats-server) holds the lock too,
        until the last of us has exited."""
        if self._fd is None:
            raise ValueError("the data dir lock was released")
        return self._fd

    def release(self) -> None:
        """Unlock now rather than at exit (the file stays: removing it would race a new holder)."""
        if self._fd is not None:
            os.close(self._fd)  # released once no child (nats-server) holds it either
            self._fd = None
            log.info("up.data_dir_unlocked", data_dir=str(self.data_dir))

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take ``data_dir``'s lock (creating the dir if missing), or raise ``DataDirBusy`` at once
    without writing anything. Children inherit the descriptor only if given it (pass_fds)."""
    data_dir = make_data_dir(data_dir.resolve())
    path = data_dir / LOCK_FILE
    # No O_TRUNC: the holder's pid must survive a refused open. (Python descriptors are
    # close-on-exec: no child holds the lock unless handed it, as the embedded nats-server is.)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise DataDirUnusable(f"cannot write in the data dir {data_dir}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(fd)
        os.close(fd)
        raise DataDirBusy(data_dir, pid) from None
    except OSError:  # no lock to be had here (a filesystem without flock): the descriptor goes
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    log.info("up.data_dir_locked", data_dir=str(data_dir), lock=str(path), pid=os.getpid())
    return DataDirLock(data_dir, fd)


def _holder_pid(fd: int) -> int | None:
    """The pid the holder wrote (None if it has not written it yet, or wrote something else)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
