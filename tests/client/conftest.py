"""Fixtures for the ACME client tests: a real LocalPebble shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certman.client import AcmeClient, fetch_directory
from certman.keys import generate_private_key
from certman.testing import LocalPebble
from tests.client.helpers import Http01Solver, start_pebble


@pytest.fixture(scope="session")
def pebble() -> Iterator[LocalPebble]:
    """Pebble with its default chaos (5% bad nonces, 50% authz reuse)."""
    p = start_pebble(domain_blocklist=["blocked.example"])
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def http_solver(pebble: LocalPebble) -> Iterator[Http01Solver]:
    solver = Http01Solver(pebble.http_port)
    try:
        yield solver
    finally:
        solver.close()


@pytest.fixture()
def client(pebble: LocalPebble) -> Iterator[AcmeClient]:
    """A client with a freshly registered account."""
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    with AcmeClient(directory, generate_private_key(), ca_bundle=pebble.ca_bundle) as c:
        c.register(agree_tos=True)
        yield c
