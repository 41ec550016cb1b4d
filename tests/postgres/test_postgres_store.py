"""PostgresStore specifics: schema versions, outages, fencing, atomic promotion, tokens, claims."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from localpg import LocalPostgres

from certman.errors import StoreError
from certman.store import CertificateFiles, CertificateMeta
from certman.store.postgres import (
    SCHEMA_VERSION,
    CachedTokenStore,
    PostgresStore,
    redact_url,
)

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


def files(n: int) -> CertificateFiles:
    return CertificateFiles.from_parts(
        f"CERT {n}\n".encode(), f"CHAIN {n}\n".encode(), f"KEY {n}\n".encode()
    )


@pytest.fixture
def raw(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


# -- schema versions ------------------------------------------------------------


def test_schema_missing_old_new_and_upgrade(pg_url: str, raw: psycopg.Connection) -> None:
    store = PostgresStore(pg_url)
    with pytest.raises(StoreError) as err:
        store.list_certificates()
    assert err.value.code == "store-schema-missing"
    assert "certman db upgrade" in str(err.value)

    assert store.upgrade(target=1) == (0, 1)
    with pytest.raises(StoreError) as err:
        store.save_certificate("a.example", files(1))
    assert err.value.code == "store-schema-old"
    assert f"version 1, older than this certman's {SCHEMA_VERSION}" in str(err.value)

    assert store.upgrade() == (1, SCHEMA_VERSION)
    assert store.upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)
    store.save_certificate("a.example", files(1))
    assert store.status().counts["certificates"] == 1

    raw.execute("INSERT INTO certman_schema (version, description) VALUES (99, 'future')")
    newer = PostgresStore(pg_url)
    with pytest.raises(StoreError) as err:
        newer.load_live("a.example")
    assert err.value.code == "store-schema-new"
    with pytest.raises(StoreError) as err:
        newer.upgrade()
    assert err.value.code == "store-schema-new"
    store.close()
    newer.close()


def test_concurrent_upgrades_apply_each_migration_once(pg_url: str) -> None:
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with PostgresStore(pg_url) as s:
                results.append(s.upgrade())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3


# -- the database going away ----------------------------------------------------------


def test_unreachable_database_is_a_clear_error() -> None:
    url = "postgresql://certman:s3cret@127.0.0.1:1/certman"
    store = PostgresStore(url, connect_timeout=2)
    with pytest.raises(StoreError) as err:
        store.list_certificates()
    assert err.value.code == "store-unavailable"
    assert "postgresql://certman@127.0.0.1:1/certman" in str(err.value)
    assert "s3cret" not in str(err.value) and "s3cret" not in repr(err.value.details)
    assert redact_url("postgresql://u:pw@[::1]:5/db") == "postgresql://u@[::1]:5/db"


def test_server_stopped_mid_run_then_back(
    pg_store: PostgresStore, pg_server: LocalPostgres
) -> None:
    pg_store.save_certificate("a.example", files(1))
    with pg_store.lock_certificate("b.example"):
        pg_server.stop()
        try:
            for call in (
                lambda: pg_store.load_live("a.example"),
                lambda: pg_store.save_certificate("a.example", files(2)),
                lambda: pg_store.save_certificate("b.example", files(1)),
                lambda: pg_store.put_token("tok", "tok.x"),
            ):
                with pytest.raises(StoreError) as err:
                    call()
                assert err.value.code == "store-unavailable", err.value
                assert "unavailable" in str(err.value)
        finally:
            pg_server.start()
    # The pool recovers on its own; nothing half-written is visible.
    assert pg_store.load_live("a.example").files == files(1)
    assert pg_store.list_versions("a.example") == [1]
    assert pg_store.list_certificates() == ["a.example"]
    with pg_store.try_lock_certificate("b.example") as got:
        assert got is True


def _kill_lock_sessions(raw: psycopg.Connection) -> int:
    rows = raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def test_lost_lock_fences_the_save(pg_store: PostgresStore, raw: psycopg.Connection) -> None:
    pg_store.save_certificate("a.example", files(1))
    with pg_store.lock_certificate("a.example"):
        # The lock's session dies (server restart, network cut): someone else may
        # now hold the lock, so this holder must not be able to promote anything.
        assert _kill_lock_sessions(raw) == 1
        with pg_store.try_lock_certificate("a.example") as got:
            assert got is True  # re-entrant in this thread: still "held" locally
        other = PostgresStore(pg_store.url)
        with other.try_lock_certificate("a.example") as got:
            assert got is True  # ...but really free in the database
        other.close()
        with pytest.raises(StoreError) as err:
            pg_store.save_certificate("a.example", files(2))
        assert err.value.code == "store-unavailable"
    assert pg_store.list_versions("a.example") == [1]
    assert pg_store.load_live("a.example").files == files(1)
    assert pg_store.save_certificate("a.example", files(3)).version == 2


def test_promotion_is_one_transaction(pg_store: PostgresStore, raw: psycopg.Connection) -> None:
    meta = CertificateMeta(name="a.example", names=("a.example",))
    pg_store.save_certificate("a.example", files(1), meta)
    # Make the last step of the promotion (saving meta) fail inside the database.
    raw.execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$"
    )
    raw.execute(
        "CREATE TRIGGER boom BEFORE UPDATE ON certman_certificate_meta"
        " FOR EACH ROW EXECUTE FUNCTION boom()"
    )
    with pytest.raises(StoreError) as err:
        pg_store.save_certificate("a.example", files(2), meta)
    assert err.value.code == "store-db-error"
    assert "disk full" in str(err.value)
    assert pg_store.list_versions("a.example") == [1]
    assert pg_store.load_live("a.example").files == files(1)
    raw.execute("DROP TRIGGER boom ON certman_certificate_meta")
    assert pg_store.save_certificate("a.example", files(2), meta).version == 2


def test_history_keeps_every_version_with_serials(pg_store: PostgresStore) -> None:
    for n in range(1, 4):
        pg_store.save_certificate("a.example", files(n))
    assert pg_store.list_versions("a.example") == [1, 2, 3]
    assert [v for _, v, _ in pg_store.issued_serials()] == [1, 2, 3]
    assert pg_store.live_versions() == {"a.example": 3}


def test_import_version_is_idempotent_and_detects_conflicts(pg_store: PostgresStore) -> None:
    assert pg_store.import_version("a.example", 3, files(3), live=False) is True
    assert pg_store.import_version("a.example", 5, files(5), live=True) is True
    assert pg_store.import_version("a.example", 5, files(5), live=True) is False
    assert pg_store.list_versions("a.example") == [3, 5]
    assert pg_store.load_live("a.example").version == 5
    with pytest.raises(StoreError) as err:
        pg_store.import_version("a.example", 3, files(4), live=False)
    assert err.value.code == "store-conflict"
    # Numbers keep growing past imported ones.
    assert pg_store.save_certificate("a.example", files(6)).version == 6


# -- tokens ---------------------------------------------------------------------------


def test_tokens_expire(pg_url: str, pg_store: PostgresStore) -> None:
    short = PostgresStore(pg_url, token_ttl=timedelta(0))
    short.put_token("gone", "gone.x")
    assert pg_store.get_token("gone") is None
    pg_store.put_token("kept", "kept.x")
    assert short.get_token("kept") == "kept.x"
    short.close()


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_token_cache_is_invalidated_by_notify(pg_url: str, pg_store: PostgresStore) -> None:
    clock = FrozenClock()
    writer = PostgresStore(pg_url)  # another node
    with CachedTokenStore(pg_store, ttl=1.0, clock=clock) as cache:
        assert cache.listening
        assert cache.get("tok") is None  # misses are not cached...
        before = cache.generation
        writer.put_token("tok", "tok.v1")
        assert cache.get("tok") == "tok.v1"  # ...so a new token is seen at once
        # Let the put's own notification arrive (it drops the entry just cached).
        assert _wait_for(lambda: cache.generation > before)
        assert cache.get("tok") == "tok.v1"
        hits = cache.hits
        assert cache.get("tok") == "tok.v1"
        assert cache.hits == hits + 1
        # The clock is frozen: only the notification can drop the entry.
        writer.delete_token("tok")
        assert _wait_for(lambda: "tok" not in cache._cache)
        assert cache.get("tok") is None
        writer.put_token("tok", "tok.v2")
        assert _wait_for(lambda: cache.get("tok") == "tok.v2")
        # Past the TTL an entry is re-read even without a notification.
        hits = cache.hits
        clock.now += 5
        assert cache.get("tok") == "tok.v2"
        assert cache.hits == hits
    # Without the listener nothing is cached at all.
    off = CachedTokenStore(pg_store, clock=clock)
    assert off.get("tok") == "tok.v2" and off.get("tok") == "tok.v2"
    assert off.hits == 0
    writer.close()


# -- claims -----------------------------------------------------------------------------

HOLDER = """
import sys
from certman.store import open_store
s = open_store(sys.argv[1])
with s.lock_certificate("a.example"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_claims_record_holders_and_killed_holders_lose_the_lock(pg_store: PostgresStore) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_store.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        [claim] = pg_store.claims()
        assert claim.name == "a.example" and f":{proc.pid}:" in claim.holder
        assert claim.expires_at > claim.claimed_at
        assert claim.held is True
        proc.kill()
        proc.wait()
    # SIGKILL: the row stays (nobody cleaned up) but the lock goes as soon as
    # the server sees the socket closed (milliseconds), and the row says so.
    assert _wait_for(lambda: not pg_store.claims()[0].held)
    [stale] = pg_store.claims()
    assert f":{proc.pid}:" in stale.holder and stale.held is False
    with pg_store.lock_certificate("a.example", timeout=30):
        [claim] = pg_store.claims()
        assert f":{proc.pid}:" not in claim.holder and claim.held is True
    assert pg_store.claims() == []
