"""A real, throw-away PostgreSQL server for tests and benchmarks: :class:`LocalPostgres`.

Runs Debian's ``initdb`` and ``postgres`` (the newest of
``/usr/lib/postgresql/*/bin``, else whatever is on ``PATH``) in a temporary
directory, listening on a free loopback port and a private socket directory,
with ``trust`` authentication (loopback only; nothing else can reach it).

PostgreSQL refuses to run as root. When the tests run as root (containers,
CI) the server runs as ``nobody`` via ``setpriv`` (no PAM, no fork: the
process we start *is* the postmaster, so stopping and killing it is exact);
otherwise as the current user.

Crash-safety settings (``fsync``, ``full_page_writes``) are off: the data is
thrown away, and the tests about "the database goes away" stop the server,
they do not pull the power.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg


class PostgresMissing(RuntimeError):
    """initdb/postgres not installed."""


def find_bindir() -> Path:
    """The newest Debian PostgreSQL bin directory, else the one ``initdb`` on PATH is in."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if (Path(path) / "initdb").exists() and version.replace(".", "").isdigit():
            candidates.append((float(version), Path(path)))
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresMissing("PostgreSQL not found (initdb): apt-get install -y postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """A PostgreSQL server in a temp dir; :meth:`stop` / :meth:`start` may be repeated."""

    def __init__(self, *, max_connections: int = 300) -> None:
        self.bindir = find_bindir()
        self.max_connections = max_connections
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="certman-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._schemas = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.base, nobody.pw_uid, nobody.pw_gid)
            self._as_user = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ]
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, dbname: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else ""
        )

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as_user, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.base,
        )

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._run("mkdir", "-m", "0700", str(self.sockets))

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        logfile = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [
                    *self._as_user,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.sockets}",
                    "-c",
                    f"max_connections={self.max_connections}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.base,
            )
        finally:
            logfile.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{self.tail()}") from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT: disconnect everyone), or ``kill`` (SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            sig = signal.SIGKILL if mode == "kill" else signal.SIGINT
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if mode == "kill":
            # Orphaned backends of a SIGKILLed postmaster exit on their own once
            # they notice; wait for the shared memory to be free before a restart.
            pidfile = self.data / "postmaster.pid"
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()

    def new_schema_url(self, dbname: str = "certman") -> str:
        """A URL to a new, empty schema of its own in ``dbname`` (via ``search_path``)."""
        self._schemas += 1
        schema = f"s{os.getpid()}_{self._schemas}"
        with psycopg.connect(self.database_url(dbname), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
        return self.database_url(dbname, options=f"-csearch_path%3D{schema}")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
