"""Fixtures: a real PostgreSQL server for the session, a fresh schema per test.

The server is started once (``initdb`` + ``postgres`` in a temp dir, see
``localpg.py``); each test gets its own schema in one database through the
URL's ``options=-csearch_path=...``, which is cheaper than a database per
test and exercises the same option users have for sharing a database.

Without PostgreSQL installed the tests skip, and fail under ``CI=true``
(the semantics of ``tests/conftest.require_tool``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
from localpg import LocalPostgres, PostgresMissing

from certman.store.postgres import PostgresStore

_counter = itertools.count(1)


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
    schema = f"t{next(_counter)}"
    pg_server.start()  # a previous test may have stopped it
    with psycopg.connect(pg_server.database_url("certman"), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    return pg_server.database_url("certman", options=f"-csearch_path%3D{schema}")


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    """An upgraded PostgresStore on a fresh schema."""
    store = PostgresStore(pg_url)
    store.upgrade()
    try:
        yield store
    finally:
        store.close()
