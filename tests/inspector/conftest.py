"""Fixtures for the inspector tests: a small PKI made on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

from certman.inspector import TrustStore
from tests.inspector import factory as f


@pytest.fixture(scope="session")
def pki() -> f.PKI:
    r = f.root()
    i = f.intermediate(r)
    return f.PKI(r, i, f.leaf(i))


@pytest.fixture(scope="session")
def store(pki: f.PKI) -> TrustStore:
    return TrustStore([pki.root.cert], name="test")


@pytest.fixture
def store_file(pki: f.PKI, tmp_path: Path) -> str:
    return pki.store_file(tmp_path)
