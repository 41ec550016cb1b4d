"""ENOSPC injected at the FileStore's write seam (runs without root or a mount).

The tmpfs test in test_faults_pebble.py fills a real file system and needs
root to mount it; this one makes every ``os.write`` (or ``fsync``) of
``certman.store.files`` and of ``certman._atomic`` (which the store writes
through) fail with ENOSPC after N bytes, at each point of a save in turn:
a clear ``store-io`` error naming "No space left on device", the previous
version still live and byte-identical with no half version listed (or, when
only meta.json failed after the switch, the new complete version live), and
the next save (space back) completes. This found directory
fsyncs whose OSError escaped the store raw (now ``store-io``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import certman._atomic as atomic_module
import certman.store.files as files_module
from certman.errors import StoreError
from certman.store import FileStore
from tests.store.test_filestore import files, full_meta


class _DiskFullOs:
    """``os`` for the store module, with a disk that fills after ``budget`` writes."""

    def __init__(self, budget: int, fail_on: str) -> None:
        self.budget = budget
        self.fail_on = fail_on
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _spend(self) -> None:
        self.calls += 1
        if self.calls > self.budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, fd: int, data: Any) -> int:
        if self.fail_on == "write":
            self._spend()
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail_on == "fsync":
            self._spend()
        os.fsync(fd)


@pytest.mark.parametrize("fail_on", ["write", "fsync"])
@pytest.mark.parametrize("budget", range(0, 12))
def test_disk_full_at_each_write_keeps_the_live_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, fail_on: str
) -> None:
    store = FileStore(tmp_path / "home")
    store.save_certificate("example.org", files(1), full_meta())
    before = store.load_live("example.org").files
    fake = _DiskFullOs(budget, fail_on)
    # The store writes through certman._atomic (file writes, their fsyncs and
    # the one after each rename) and fsyncs directories itself: both see the
    # full disk.
    monkeypatch.setattr(files_module, "os", fake)
    monkeypatch.setattr(atomic_module, "os", fake)
    try:
        store.save_certificate("example.org", files(2), full_meta())
    except StoreError as exc:
        assert exc.code == "store-io", exc.code
        assert "No space left on device" in str(exc)
        failed = True
    else:
        failed = False
    finally:
        monkeypatch.setattr(files_module, "os", os)
        monkeypatch.setattr(atomic_module, "os", os)
    assert isinstance(files_module.os, ModuleType)
    assert isinstance(atomic_module.os, ModuleType)
    live = store.load_live("example.org")
    if failed and live.version == 1:  # failed before the switch: untouched
        assert live.files == before
        # Any other version listed is complete (its rename happened; only the
        # directory fsync after it failed), never a half-written one.
        for n in store.list_versions("example.org"):
            if n != 1:
                assert store.load_version("example.org", n).files == files(2)
    else:  # the save got through the switch (meta.json may have failed after it)
        assert live.version == 2 and live.files == files(2)
    # Space is back: the next save completes.
    store.save_certificate("example.org", files(3), full_meta())
    assert store.load_live("example.org").files == files(3)
