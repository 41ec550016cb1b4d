"""Fixtures for the CLI tests: a real Pebble and the real ``certman`` command.

Every test runs ``python -m certman`` as a separate process, the way a user
or a systemd unit does; nothing is called in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certman.testing import LocalPebble
from tests.conftest import running_pebble

BLOCKED = "refused.example"


@pytest.fixture(scope="session")
def cli_pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(authz_reuse=0, domain_blocklist=[BLOCKED])


@dataclass
class Certman:
    """Runs ``certman`` against one home directory and one CA."""

    home: Path
    pebble: LocalPebble
    server: str | None = None

    @property
    def listen(self) -> list[str]:
        return ["--standalone", "--listen", f"127.0.0.1:{self.pebble.http_port}"]

    def global_args(self) -> list[str]:
        return [
            "--home",
            str(self.home),
            "--server",
            self.server or self.pebble.directory_url,
            "--ca-bundle",
            str(self.pebble.ca_bundle),
        ]

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "certman", *self.global_args(), *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
        proc = subprocess.run(
            self.command(*args), capture_output=True, text=True, env=env, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"certman {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )


@pytest.fixture()
def certman(cli_pebble: LocalPebble, tmp_path: Path) -> Certman:
    return Certman(tmp_path / "home", cli_pebble)


@pytest.fixture()
def registered(certman: Certman) -> Certman:
    certman.run("account", "register", "--agree-tos")
    return certman


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every symlink's target under ``root``.

    Empty lock files under ``locks/`` are left out: taking a lineage's lock
    creates one, and they hold no data.
    """
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("locks/"):
            continue
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out
