"""The Store contract, run against both stores: FileStore and a real PostgresStore.

This is the one suite for what a caller can observe through the protocol;
``tests/store/test_filestore.py`` keeps only what is about files (layout,
modes, symlinks, crash debris). The FileStore case always runs; the
PostgreSQL one uses the real server of ``conftest.py`` (marked ``postgres``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from certman.errors import StoreError
from certman.store import (
    AccountRecord,
    CertificateMeta,
    FileStore,
    Store,
    open_store,
    validate_name,
)
from certman.store.postgres import PostgresStore
from tests.store.test_filestore import DIRECTORY, NOW, REPO, files, full_meta


@pytest.fixture(params=["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "home")
    url: str = request.getfixturevalue("pg_url")
    PostgresStore(url).upgrade()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    if isinstance(s, PostgresStore):
        s.close()


def test_open_store_picks_the_implementation(store: Store, store_url: str) -> None:
    assert isinstance(store, Store)
    expected = PostgresStore if store_url.startswith("postgresql://") else FileStore
    assert type(store) is expected


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", ".", ".hidden", "a..b", "x" * 201, "a b"])
def test_bad_names_refused(store: Store, bad: str) -> None:
    with pytest.raises(StoreError) as err:
        store.save_certificate(bad, files(1))
    assert err.value.code == "store-bad-name"
    with pytest.raises(StoreError) as err:
        store.lock_certificate(bad)
    assert err.value.code == "store-bad-name"
    with pytest.raises(StoreError):
        validate_name(bad)


def test_save_versions_and_live(store: Store) -> None:
    v1 = store.save_certificate("example.org", files(1), full_meta())
    assert v1.version == 1 and v1.files == files(1)
    v2 = store.save_certificate("example.org", files(2))
    assert v2.version == 2
    live = store.load_live("example.org")
    assert live.version == 2 and live.files.privkey_pem == b"KEY 2\n"
    assert live.files.fullchain_pem == b"CERT 2\nCHAIN 2\n"
    assert live.saved_at is not None and live.saved_at.tzinfo is not None
    assert store.load_version("example.org", 1).files == files(1)
    assert store.list_versions("example.org") == [1, 2]
    assert store.list_certificates() == ["example.org"]
    assert store.load_meta("example.org") == full_meta()
    assert "example.org" in store.certificate_location("example.org")


def test_missing_things(store: Store) -> None:
    for call in (
        lambda: store.load_live("nope"),
        lambda: store.load_version("nope", 1),
        lambda: store.load_version("nope", 0),
        lambda: store.load_meta("nope"),
        lambda: store.load_account(DIRECTORY, "1"),
        lambda: store.load_account_key(DIRECTORY, "1"),
    ):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.code == "store-not-found"
    assert store.find_meta("nope") is None
    assert store.list_versions("nope") == []
    assert store.list_certificates() == []
    assert store.list_accounts() == []
    assert store.find_account(DIRECTORY) is None
    store.delete_certificate("nope")


def test_meta_only_lineage_is_not_a_certificate(store: Store) -> None:
    store.save_meta(full_meta())
    assert store.load_meta("example.org") == full_meta()
    assert store.list_certificates() == []
    with pytest.raises(StoreError) as err:
        store.load_live("example.org")
    assert err.value.code == "store-not-found"
    changed = replace(full_meta(), consecutive_failures=3, last_error=None)
    store.save_meta(changed)
    assert store.load_meta("example.org") == changed


def test_delete_certificate(store: Store) -> None:
    store.save_certificate("a.example", files(1), full_meta("a.example"))
    store.save_certificate("b.example", files(1))
    store.delete_certificate("a.example")
    assert store.list_certificates() == ["b.example"]
    assert store.find_meta("a.example") is None
    assert store.list_versions("a.example") == []
    # A new lineage of the same name starts over.
    assert store.save_certificate("a.example", files(5)).version == 1


def test_concurrent_readers_see_whole_versions(store: Store) -> None:
    store.save_certificate("example.org", files(0))
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[object] = []

    def reader() -> None:
        while not stop.is_set():
            v = store.load_live("example.org")
            if v.files != files(int(v.files.cert_pem.split()[1])):
                bad.append(v)
            seen.add(v.version)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 30):
            store.save_certificate("example.org", files(n))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert bad == []
    assert store.load_live("example.org").version == 30


def test_naive_datetime_and_bad_values_refused(store: Store) -> None:
    with pytest.raises(StoreError) as err:
        store.save_meta(CertificateMeta(name="a.example", names=("a",), created_at=datetime.now()))
    assert err.value.code == "store-bad-value"
    # Not JSON-able outside the mappings to_dict() checks itself.
    with pytest.raises(StoreError) as err:
        store.save_meta(CertificateMeta(name="a.example", names=(object(),)))  # type: ignore[arg-type]
    assert err.value.code == "store-bad-value"
    assert store.find_meta("a.example") is None
    naive = AccountRecord("1", DIRECTORY, "https://x/acct/1", created_at=datetime(2026, 1, 1))
    not_json = AccountRecord("1", DIRECTORY, "https://x/acct/1", extra={"k": object()})
    for record in (naive, not_json):
        with pytest.raises(StoreError) as err:
            store.save_account(record, b"K")
        assert err.value.code == "store-bad-value"
    assert store.list_accounts() == []
    with pytest.raises(StoreError) as err:
        store.save_certificate("a.example", files(1), full_meta("b.example"))
    assert err.value.code == "store-bad-name"


def test_accounts(store: Store) -> None:
    other = "https://acme-staging-v02.api.letsencrypt.org/directory"
    a1 = AccountRecord(
        "1", DIRECTORY, "https://x/acct/1", contact=("mailto:a@example.org",), created_at=NOW
    )
    a2 = AccountRecord(
        "2", DIRECTORY, "https://x/acct/2", created_at=NOW + timedelta(1), extra={"kid": "k"}
    )
    a3 = AccountRecord("9", other, "https://y/acct/9", created_at=NOW)
    for a, key in ((a1, b"K1"), (a2, b"K2"), (a3, b"K3")):
        store.save_account(a, key)
    assert store.list_accounts(DIRECTORY) == [a1, a2]
    assert len(store.list_accounts()) == 3
    assert store.find_account(DIRECTORY) == a2
    store.update_account(replace(a2, status="deactivated"))
    assert store.find_account(DIRECTORY) == a1
    assert store.load_account_key(DIRECTORY, "2") == b"K2"
    store.save_account_key(DIRECTORY, "1", b"NEW KEY")
    assert store.load_account_key(DIRECTORY, "1") == b"NEW KEY"
    assert store.load_previous_account_key(DIRECTORY, "1") == b"K1"
    assert store.load_previous_account_key(DIRECTORY, "2") is None
    with pytest.raises(StoreError) as err:
        store.update_account(AccountRecord("5", DIRECTORY, "https://x/acct/5"))
    assert err.value.code == "store-not-found"
    with pytest.raises(StoreError) as err:
        store.save_account_key(DIRECTORY, "5", b"K")
    assert err.value.code == "store-not-found"


def test_tokens_shared_between_store_instances(store_url: str) -> None:
    writer = open_store(store_url)
    reader = open_store(store_url)
    writer.put_token("tok_en-1", "tok_en-1.thumb")
    assert reader.get_token("tok_en-1") == "tok_en-1.thumb"
    writer.put_token("tok_en-1", "tok_en-1.other")
    assert reader.get_token("tok_en-1") == "tok_en-1.other"
    assert reader.get_token("../etc/passwd") is None
    with pytest.raises(StoreError):
        writer.put_token("../x", "v")
    writer.delete_token("tok_en-1")
    writer.delete_token("tok_en-1")
    assert reader.get_token("tok_en-1") is None


# -- locks ------------------------------------------------------------------------

HOLDER = """
import sys
from certman.store import open_store
s = open_store(sys.argv[1])
with s.lock_certificate("example.org"), s.lock_account(sys.argv[2], "1"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _holder(store_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url, DIRECTORY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_locks_exclusive_across_processes(store: Store, store_url: str) -> None:
    with _holder(store_url) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "locked"
        with store.try_lock_certificate("example.org") as got:
            assert got is False
        with store.try_lock_account(DIRECTORY, "1") as got:
            assert got is False
        with pytest.raises(StoreError) as err, store.lock_certificate("example.org", timeout=0):
            pass
        assert err.value.code == "store-locked"
        with pytest.raises(StoreError), store.lock_certificate("example.org", timeout=0.05):
            pass
        # A save needs the lock too: it waits (here: would wait), it never interleaves.
        with store.try_lock_certificate("other.org") as got:
            assert got is True
        proc.stdin.write("\n")
        proc.stdin.flush()
        with (
            store.lock_certificate("example.org", timeout=30),
            store.lock_account(DIRECTORY, "1", timeout=30),
        ):
            pass
        proc.wait()


def test_lock_released_when_holder_is_killed(store: Store, store_url: str) -> None:
    with _holder(store_url) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with store.try_lock_certificate("example.org") as got:
            assert got is False
        proc.kill()  # SIGKILL: no cleanup code runs in the holder
        proc.wait()
    with store.lock_certificate("example.org", timeout=30):
        pass


def test_locks_between_threads_and_reentrancy(store: Store, store_url: str) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock_certificate("example.org"):
            held.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait()
        with store.try_lock_certificate("example.org") as got:
            assert got is False
        with open_store(store_url).try_lock_certificate("example.org") as got:
            assert got is False
    finally:
        release.set()
        t.join()
    with store.lock_certificate("example.org"), store.lock_certificate("example.org"):
        store.save_certificate("example.org", files(1))
    with store.try_lock_certificate("example.org") as got:
        assert got is True
