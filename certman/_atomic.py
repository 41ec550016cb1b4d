"""Crash-safe file writing shared by the store, the exporter, metrics and the CLI.

A reader must see the old file or the new one, never a mix, and after a crash
the file must be one of the two: so the data goes to a new temp file in the
same directory (``O_EXCL | O_NOFOLLOW``: never through a planted symlink),
is ``fsync``-ed, renamed over the target (a rename replaces a symlink at the
target rather than writing through it), then the directory is ``fsync``-ed so
the rename itself is durable.

Every function here raises plain ``OSError``: each caller wraps it into its
own error (``store-io``, ``metrics-write-failed``, a log warning...). Not
thread-unsafe in itself: temp names are random, so concurrent writers of the
same target race only on which rename lands last.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_file(
    name: str | os.PathLike[str], data: bytes, mode: int, *, dir_fd: int | None = None
) -> None:
    """Create the new file ``name`` (never an existing one or a symlink), write and fsync it.

    The mode is set with ``fchmod`` too: the one given to ``open`` is
    filtered by the umask. A failure leaves the file (possibly partly
    written) for the caller to remove.
    """
    fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_at(dir_fd: int, name: str, data: bytes, mode: int, *, tmp_prefix: str) -> None:
    """Atomically replace ``name`` in the open directory ``dir_fd`` with ``data``.

    The temp file is ``<tmp_prefix><random>``; it is removed again if
    anything before the rename fails. The directory is fsync-ed after the
    rename; if only that fails, the new file is in place (not yet durable)
    and the ``OSError`` still propagates.
    """
    tmp = f"{tmp_prefix}{secrets.token_hex(6)}"
    try:
        create_file(tmp, data, mode, dir_fd=dir_fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int, *, tmp_prefix: str) -> None:
    """:func:`replace_at` for a path: the directory is the path's parent (which must exist)."""
    target = Path(os.path.abspath(path))
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        replace_at(fd, target.name, data, mode, tmp_prefix=tmp_prefix)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path``, making renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
