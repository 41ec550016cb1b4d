"""Fixtures: a real PostgreSQL server for the session, a fresh schema per test.

The server is started once (``initdb`` + ``postgres`` in a temp dir, see
``localpg.py``); each test gets its own schema in one database through the
URL's ``options=-csearch_path=...``, which is cheaper than a database per
test and exercises the same option users have for sharing a database.

Without PostgreSQL installed the tests skip, and fail under ``CI=true``
(the semantics of ``tests/conftest.require_tool``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from localpg import LocalPostgres, PostgresMissing

from certman.store.postgres import PostgresStore


def _in_ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    try:
        server = LocalPostgres()
    except PostgresMissing as exc:
        if _in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        server.start()
        server.create_database("certman")
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: LocalPostgres) -> str:
    """A URL to an empty schema of its own (no certman tables yet)."""
    pg_server.start()  # a previous test may have stopped it
    return pg_server.new_schema_url()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    """An upgraded PostgresStore on a fresh schema."""
    store = PostgresStore(pg_url)
    store.upgrade()
    try:
        yield store
    finally:
        store.close()
