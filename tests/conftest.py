"""Shared pytest set-up.

Tests that need a real external part (pebble, PostgreSQL) call
:func:`require_tool`: on a developer machine without it they skip with the
command to install it; under ``CI=true`` a missing part is a failure, never a
skip. A Pebble fixture is ``yield from running_pebble(**LocalPebble options)``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socketserver
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from certman.testing import LocalPebble


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, *, package: str) -> str:
    """Return the path of executable ``name`` or skip (fail under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt-get install -y {package}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def running_pebble(**options: Any) -> Iterator[LocalPebble]:
    """The body of a Pebble fixture: ``yield from running_pebble(**LocalPebble options)``.

    Requires pebble and pebble-challtestsrv (see :func:`require_tool`); the
    server is stopped when the fixture's scope ends.
    """
    require_tool("pebble", package="pebble")
    require_tool("pebble-challtestsrv", package="pebble")
    from certman.testing import LocalPebble

    with LocalPebble(**options) as running:
        yield running


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run ``server`` in a thread for the ``with`` block, then shut it down and close it."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class QuietStaticHandler(SimpleHTTPRequestHandler):
    """Serves files without logging each request on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(root: Path, port: int = 0) -> Iterator[int]:
    """A web server (as nginx would be) serving ``root`` on 127.0.0.1:``port``; yields the port."""
    handler = functools.partial(QuietStaticHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    with serving(server):
        yield server.server_port
