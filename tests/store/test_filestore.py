"""FileStore: layout, modes, atomic live switch, crash recovery, symlinks, corruption.

What any Store must do (versions, accounts, tokens, locks) is checked for the
FileStore and PostgreSQL alike in tests/postgres/test_store_contract.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certman.errors import StoreError
from certman.store import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    FileStore,
    Store,
    account_id_for_url,
    ca_key,
    default_root,
)

DIRECTORY = "https://127.0.0.1:14000/dir"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def files(n: int) -> CertificateFiles:
    return CertificateFiles.from_parts(
        f"CERT {n}\n".encode(), f"CHAIN {n}\n".encode(), f"KEY {n}\n".encode()
    )


def full_meta(name: str = "example.org") -> CertificateMeta:
    return CertificateMeta(
        name=name,
        names=(name, f"*.{name}", "192.0.2.1"),
        key_type="ec-p384",
        profile="shortlived",
        preferred_chain="ISRG Root X1",
        directory_url=DIRECTORY,
        account_id="1",
        created_at=NOW,
        updated_at=NOW + timedelta(days=1),
        solver="webroot",
        solver_options={"webroot": "/srv/www", "nested": [1, 2, {"a": None}]},
        pre_hooks=("systemctl stop thing",),
        deploy_hooks=("systemctl reload nginx", "touch /tmp/x"),
        post_hooks=("systemctl start thing",),
        ari_window_start=NOW + timedelta(days=60),
        ari_window_end=NOW + timedelta(days=62),
        ari_chosen_time=NOW + timedelta(days=61),
        ari_retry_after=NOW + timedelta(hours=6),
        ari_explanation_url="https://ca.example/why",
        last_success_at=NOW,
        last_error="boom",
        last_error_code="acme-rate-limited",
        last_error_at=NOW,
        consecutive_failures=2,
        next_retry_at=NOW + timedelta(hours=1),
        not_after=NOW + timedelta(days=90),
        serial="0abc",
        extra={"k": "v"},
    )


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "home")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- root and names -----------------------------------------------------------


def test_default_root_resolution(tmp_path: Path) -> None:
    assert default_root({"CERTMAN_HOME": "/x/home", "STATE_DIRECTORY": "/s"}, 1000) == Path(
        "/x/home"
    )
    assert default_root({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, 0) == Path("/var/lib/a")
    assert default_root({}, 0) == Path("/var/lib/certman")
    assert default_root({"HOME": "/home/u"}, 1000) == Path("/home/u/.local/share/certman")
    assert default_root({"HOME": "/home/u", "XDG_DATA_HOME": "/d"}, 1000) == Path("/d/certman")


def test_root_created_0700(tmp_path: Path) -> None:
    s = FileStore(tmp_path / "a" / "b")
    assert s.root.is_dir()
    assert mode(s.root) == 0o700
    assert isinstance(s, Store)


def test_ca_key_and_account_id() -> None:
    assert ca_key("https://acme-v02.api.letsencrypt.org/directory") == (
        "acme-v02.api.letsencrypt.org"
    )
    assert ca_key("https://LOCALHOST:14000/dir") == "localhost_14000"
    assert ca_key("https://[::1]:14000/dir") == "ipv6---1_14000"
    assert account_id_for_url("https://ca.example/acme/acct/123456") == "123456"
    odd = account_id_for_url("https://ca.example/acct/..")
    assert len(odd) == 16 and odd.isalnum()


# -- certificates -----------------------------------------------------------------


def test_save_versions_and_live_symlink(store: FileStore) -> None:
    # What the protocol shows of versions: tests/postgres/test_store_contract.py.
    store.save_certificate("example.org", files(1), full_meta())
    store.save_certificate("example.org", files(2))
    cdir = store.root / "certs" / "example.org"
    assert os.readlink(cdir / "live") == "archive/2"
    # The paths a web server is configured with resolve to the live version.
    paths = store.live_paths("example.org")
    assert paths["privkey"].read_bytes() == b"KEY 2\n"
    assert paths["fullchain"] == cdir / "live" / "fullchain.pem"
    assert store.certificate_location("example.org") == str(cdir / "live")


def test_modes(store: FileStore) -> None:
    store.save_certificate("example.org", files(1), full_meta())
    store.save_account(AccountRecord("1", DIRECTORY, "https://x/acct/1"), b"ACCOUNT KEY")
    store.put_token("tok", "tok.thumb")
    with store.lock_certificate("example.org"):
        pass
    dirs = [store.root] + [p for p in store.root.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert len(dirs) > 8
    assert {str(d): mode(d) for d in dirs if mode(d) != 0o700} == {}
    archive = store.root / "certs/example.org/archive/1"
    assert mode(archive / "privkey.pem") == 0o600
    assert mode(archive / "cert.pem") == 0o644
    account = store.root / "accounts" / "127.0.0.1_14000" / "1"
    assert mode(account / "key.pem") == 0o600
    assert mode(account / "account.json") == 0o600
    assert mode(store.root / "certs/example.org/meta.json") == 0o600


def test_delete_certificate(store: FileStore) -> None:
    store.save_certificate("a.example", files(1), full_meta("a.example"))
    store.save_certificate("b.example", files(1))
    store.delete_certificate("a.example")
    assert not (store.root / "certs" / "a.example").exists()
    assert [p.name for p in (store.root / "certs").iterdir()] == ["b.example"]


# -- crash safety -------------------------------------------------------------------


def test_crash_before_live_switch_keeps_old_version(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_certificate("example.org", files(1))

    def crash(self: FileStore, name: str, version: int) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(FileStore, "_switch_live", crash)
    with pytest.raises(RuntimeError):
        store.save_certificate("example.org", files(2))
    monkeypatch.undo()

    live = store.load_live("example.org")
    assert live.version == 1 and live.files == files(1)
    assert store.list_versions("example.org") == [1, 2]  # written, never live
    v = store.save_certificate("example.org", files(3))
    assert v.version == 3
    assert store.load_live("example.org").files == files(3)


def test_process_killed_mid_save_then_recovered(store: FileStore) -> None:
    store.save_certificate("example.org", files(1), full_meta())
    # A real process dies (os._exit, no cleanup) after writing part of a version.
    script = textwrap.dedent(
        f"""
        import os
        from certman.store import FileStore, CertificateFiles

        real_create = FileStore._create
        count = 0
        def dying_create(self, dfd, name, data, mode, parts):
            global count
            count += 1
            if count == 3:  # cert.pem and chain.pem written, then the power goes
                os._exit(9)
            real_create(self, dfd, name, data, mode, parts)
        FileStore._create = dying_create
        s = FileStore({str(store.root)!r})
        s.save_certificate("example.org", CertificateFiles.from_parts(b"C2", b"H2", b"K2"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert proc.returncode == 9
    archive = store.root / "certs/example.org/archive"
    debris = [p.name for p in archive.iterdir() if p.name.startswith(".tmp-")]
    assert debris  # the half-written version is there, unnamed
    assert store.load_live("example.org").files == files(1)
    assert store.list_versions("example.org") == [1]
    assert store.load_meta("example.org") == full_meta()

    # A stray incomplete numbered directory (made by hand, say) is skipped too.
    (archive / "7").mkdir()
    (archive / "7" / "cert.pem").write_bytes(b"partial")
    assert store.list_versions("example.org") == [1]

    v = store.save_certificate("example.org", files(2))
    assert v.version == 8
    assert store.load_live("example.org").files == files(2)
    assert not [p for p in archive.iterdir() if p.name.startswith(".tmp-")]


# -- symlinks planted in the store ------------------------------------------------


def test_planted_symlink_directories_are_refused(store: FileStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.root / "certs").mkdir()
    (store.root / "certs" / "example.org").symlink_to(elsewhere)
    with pytest.raises(StoreError) as err:
        store.save_certificate("example.org", files(1))
    assert err.value.code == "store-unsafe-path"
    assert "example.org" in str(err.value)
    assert list(elsewhere.iterdir()) == []

    (store.root / "certs" / "b.example").mkdir()
    (store.root / "certs" / "b.example" / "archive").symlink_to(elsewhere)
    with pytest.raises(StoreError) as err:
        store.save_certificate("b.example", files(1))
    assert err.value.code == "store-unsafe-path"

    (store.root / "tokens").symlink_to(elsewhere)
    with pytest.raises(StoreError) as err:
        store.put_token("abc", "abc.x")
    assert err.value.code == "store-unsafe-path"

    shutil.rmtree(store.root / "locks")
    (store.root / "locks").symlink_to(elsewhere)
    with pytest.raises(StoreError) as err, store.lock_certificate("c.example"):
        pass
    assert err.value.code == "store-unsafe-path"

    (store.root / "accounts").mkdir()
    (store.root / "accounts" / "127.0.0.1_14000").symlink_to(elsewhere)
    with pytest.raises(StoreError) as err:
        store.save_account(AccountRecord("1", DIRECTORY, "https://x/acct/1"), b"K")
    assert err.value.code == "store-unsafe-path"
    assert list(elsewhere.iterdir()) == []


def test_planted_symlink_file_is_replaced_not_followed(store: FileStore, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store.save_certificate("example.org", files(1), full_meta())
    meta_path = store.root / "certs/example.org/meta.json"
    meta_path.unlink()
    meta_path.symlink_to(victim)
    # Reading through a planted symlink is refused as well.
    with pytest.raises(StoreError) as err:
        store.load_meta("example.org")
    assert err.value.code == "store-unsafe-path"
    store.save_meta(full_meta())
    assert victim.read_text() == "precious"
    assert not meta_path.is_symlink()
    assert store.load_meta("example.org") == full_meta()


# -- corruption ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"name": "example.org"}',
        b'{"name": "example.org", "names": ["a"], "created_at": "2026-01-01T00:00:00"}',
        b'{"name": "example.org", "names": "a"}',
        b'{"name": "other.org", "names": ["a"]}',
        b'{"name": "example.org", "names": ["a"], "consecutive_failures": -1}',
    ],
)
def test_corrupt_meta_is_a_store_error(store: FileStore, content: bytes) -> None:
    store.save_certificate("example.org", files(1), full_meta())
    meta_path = store.root / "certs/example.org/meta.json"
    meta_path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        store.load_meta("example.org")
    assert err.value.code == "store-corrupt"
    assert str(meta_path) in str(err.value)
    assert err.value.details["path"] == str(meta_path)
    # The certificate itself is still readable, and meta can be rewritten.
    assert store.load_live("example.org").files == files(1)
    store.save_meta(full_meta())
    assert store.load_meta("example.org") == full_meta()


def test_corrupt_account_and_live_link(store: FileStore) -> None:
    store.save_account(AccountRecord("1", DIRECTORY, "https://x/acct/1"), b"K")
    path = store.root / "accounts/127.0.0.1_14000/1/account.json"
    path.write_text('{"account_id": 1}')
    for call in (lambda: store.load_account(DIRECTORY, "1"), lambda: store.list_accounts()):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.code == "store-corrupt"
        assert str(path) in str(err.value)

    store.save_certificate("example.org", files(1))
    live = store.root / "certs/example.org/live"
    live.unlink()
    live.symlink_to("/etc")
    with pytest.raises(StoreError) as err:
        store.load_live("example.org")
    assert err.value.code == "store-corrupt"


# -- meta and accounts round trips ---------------------------------------------------


def test_meta_round_trip_and_forward_compatible(store: FileStore) -> None:
    meta = full_meta()
    store.save_meta(meta)
    assert store.load_meta("example.org") == meta
    path = store.root / "certs/example.org/meta.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == 1
    doc["written_by_a_newer_certman"] = {"x": 1}
    path.write_text(json.dumps(doc))
    assert store.load_meta("example.org") == meta
    # A meta-only lineage (first issuance failed) is not listed as a certificate.
    assert store.list_certificates() == []


def test_previous_account_key_file(store: FileStore) -> None:
    # The rest of the account API: tests/postgres/test_store_contract.py.
    store.save_account(AccountRecord("1", DIRECTORY, "https://x/acct/1", created_at=NOW), b"K1")
    store.save_account_key(DIRECTORY, "1", b"NEW KEY")
    prev = store.root / "accounts/127.0.0.1_14000/1/key.prev.pem"
    assert prev.read_bytes() == b"K1" and mode(prev) == 0o600


# -- property: any meta round-trips through meta.json ---------------------------------


utc_times = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
metas = st.builds(
    CertificateMeta,
    name=st.just("prop.example"),
    names=st.lists(st.text(min_size=1, max_size=30), max_size=4).map(tuple),
    key_type=st.sampled_from(["ec-p256", "ec-p384", "rsa-2048"]),
    profile=st.none() | st.text(max_size=10),
    created_at=utc_times,
    ari_window_start=utc_times,
    next_retry_at=utc_times,
    last_error=st.none() | st.text(max_size=50),
    consecutive_failures=st.integers(0, 10_000),
    deploy_hooks=st.lists(st.text(max_size=30), max_size=3).map(tuple),
    solver_options=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(meta=metas)
def test_any_meta_round_trips(store: FileStore, meta: CertificateMeta) -> None:
    store.save_meta(meta)
    assert store.load_meta("prop.example") == meta


def test_purge_stale_tokens(store: FileStore) -> None:
    store.put_token("old", "old.x")
    store.put_token("new", "new.x")
    old_time = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    os.utime(store.root / "tokens" / "old", (old_time, old_time))
    now = datetime(2026, 1, 3, tzinfo=UTC)
    os.utime(store.root / "tokens" / "new", (now.timestamp(), now.timestamp()))
    assert store.purge_tokens(now, timedelta(days=1)) == 1
    assert store.get_token("old") is None and store.get_token("new") == "new.x"
    assert FileStore(store.root.parent / "empty").purge_tokens(now) == 0


def test_group_writable_root_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o775)
    FileStore(root)
    assert "writable by other users" in caplog.text
    caplog.clear()
    FileStore(tmp_path / "fresh")
    assert caplog.text == ""
