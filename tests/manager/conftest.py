"""Fixtures for the manager tests: one real Pebble for the whole package.

Pebble keeps its nonce chaos (5% ``badNonce``) but reuses (almost) no
authorization (``authz_reuse=0``), so orders really validate through the
solvers under test. Failures are provoked with a name on Pebble's blocklist,
which is refused every time, rather than with a validation that a reused
authorization could skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certman.manager import CertificateManager, SolverSpec
from certman.store import FileStore
from certman.testing import LocalPebble
from tests.conftest import running_pebble

BLOCKED = "blocked.example"


@pytest.fixture(scope="session")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(authz_reuse=0, domain_blocklist=[BLOCKED])


@pytest.fixture()
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "home")


@pytest.fixture()
def manager(pebble: LocalPebble, store: FileStore) -> Iterator[CertificateManager]:
    """A manager with a registered account answering HTTP-01 on Pebble's port."""
    with CertificateManager(
        store,
        server=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", pebble.http_port),
        concurrency=4,
    ) as m:
        m.register_account(agree_tos=True)
        yield m
