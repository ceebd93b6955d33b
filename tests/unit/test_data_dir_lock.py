"""One ``relaydesk up`` per data dir: the lock (services.data_dir) refuses a second holder
with the first one's pid, lets other data dirs be, and is gone once its holder has let go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.data_dir import LOCK_FILE, DataDirBusy, lock_data_dir


def test_a_second_lock_on_the_same_data_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with lock_data_dir(data):
        written = (data / LOCK_FILE).read_text()
        with pytest.raises(DataDirBusy) as refused:
            lock_data_dir(tmp_path / "data" / ".." / "data")  # the same dir, however spelled
        assert refused.value.pid == os.getpid()
        assert f"(pid {os.getpid()})" in str(refused.value)
        assert str(data.resolve()) in str(refused.value)
        assert (data / LOCK_FILE).read_text() == written  # the refused one wrote nothing
    with lock_data_dir(data):  # released: the next one takes it
        pass


def test_different_data_dirs_lock_side_by_side(tmp_path: Path) -> None:
    with lock_data_dir(tmp_path / "a"), lock_data_dir(tmp_path / "b"):
        assert (tmp_path / "a" / LOCK_FILE).exists() and (tmp_path / "b" / LOCK_FILE).exists()


def test_a_child_handed_the_lock_holds_it_until_it_exits(tmp_path: Path) -> None:
    # As the embedded nats-server does: `up` killed first must not free a store still in use.
    lock = lock_data_dir(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, pass_fds=(lock.fileno(),)
    )
    try:
        lock.release()
        with pytest.raises(DataDirBusy):
            lock_data_dir(tmp_path)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    with lock_data_dir(tmp_path):
        pass
