"""Symlinks planted at every place the FileStore and the webroot solver write.

Complements tests/store/test_filestore.py and tests/challenges/test_webroot.py
(lineage, archive, tokens, locks and CA directories; meta.json; the webroot's
two directories and token file) with the remaining places: a pre-planted
next version directory, the ``live`` link, an account directory, the account
key during rollover, lock files, token files, and the webroot's temporary
file. For each: the operation either refuses (``store-unsafe-path`` /
``challenge-unsafe-path``) or replaces the link, and the file or directory
the link points at is never written, created in or read back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from certman.challenges import ChallengeTask
from certman.challenges.webroot import WebrootSolver
from certman.errors import CertmanError
from certman.store import FileStore
from certman.store.base import AccountRecord
from tests.store.test_filestore import DIRECTORY, files, full_meta

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def outside(tmp_path: Path) -> tuple[Path, Path]:
    target_dir = tmp_path / "outside-dir"
    target_dir.mkdir()
    target_file = tmp_path / "outside-file"
    target_file.write_bytes(b"precious\n")
    return target_dir, target_file


def untouched(target_dir: Path, target_file: Path) -> None:
    assert list(target_dir.iterdir()) == []
    assert target_file.read_bytes() == b"precious\n"


def store_with_lineage(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "home")
    store.save_certificate("example.org", files(1), full_meta())
    return store


Op = Callable[[FileStore, Path, Path], None]


def plant_next_version(store: FileStore, d: Path, f: Path) -> None:
    (store.root / "certs/example.org/archive/2").symlink_to(d)
    store.save_certificate("example.org", files(2), full_meta())


def plant_live(store: FileStore, d: Path, f: Path) -> None:
    live = store.root / "certs/example.org/live"
    live.unlink()
    live.symlink_to(d)  # an absolute link to somewhere else: the switch must replace it
    store.save_certificate("example.org", files(2), full_meta())
    assert os.readlink(live) == "archive/2"


def plant_account_dir(store: FileStore, d: Path, f: Path) -> None:
    record = AccountRecord("1", DIRECTORY, "https://x/acct/1")
    ca_dir = store.root / "accounts" / "127.0.0.1_14000"
    ca_dir.mkdir(parents=True)
    (ca_dir / "1").symlink_to(d)
    store.save_account(record, b"KEY")


def plant_account_key(store: FileStore, d: Path, f: Path) -> None:
    record = AccountRecord("1", DIRECTORY, "https://x/acct/1")
    store.save_account(record, b"KEY")
    key = next((store.root / "accounts").rglob("key.pem"))
    key.unlink()
    key.symlink_to(f)
    store.save_account_key(DIRECTORY, "1", b"NEWKEY")  # reads the old key: must not follow


def plant_lock_file(store: FileStore, d: Path, f: Path) -> None:
    locks = store.root / "locks" / "certs"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / "example.org.lock"
    if lock.exists():
        lock.unlink()
    lock.symlink_to(f)
    with store.lock_certificate("example.org", timeout=1):
        pass


def plant_token_file(store: FileStore, d: Path, f: Path) -> None:
    store.put_token("abc", "abc.x")
    token = store.root / "tokens" / "abc"
    token.unlink()
    token.symlink_to(f)
    store.put_token("abc", "abc.y")
    assert not token.is_symlink() and store.get_token("abc") == "abc.y"


def plant_meta_dir(store: FileStore, d: Path, f: Path) -> None:
    meta = store.root / "certs/example.org/meta.json"
    meta.unlink()
    meta.symlink_to(d)
    store.save_meta(full_meta())
    assert not meta.is_symlink()


@pytest.mark.parametrize(
    "op",
    [
        plant_next_version,
        plant_live,
        plant_account_dir,
        plant_account_key,
        plant_lock_file,
        plant_token_file,
        plant_meta_dir,
    ],
)
def test_filestore_never_follows_a_planted_symlink(op: Op, tmp_path: Path) -> None:
    store = store_with_lineage(tmp_path)
    d, f = outside(tmp_path)
    try:
        op(store, d, f)
    except CertmanError as exc:
        assert exc.code == "store-unsafe-path", exc.code
    untouched(d, f)
    # The lineage is still readable (a planted archive/2 is skipped, not used).
    assert store.load_live("example.org").version in (1, 2, 3)


def test_webroot_temporary_file_and_token_never_follow_links(tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    challenge = webroot / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    d, f = outside(tmp_path)
    (challenge / TOKEN).symlink_to(f)
    solver = WebrootSolver(webroot)
    task = ChallengeTask("example.org", "dns", "http-01", TOKEN, TOKEN + ".x")
    solver.present([task])
    assert not (challenge / TOKEN).is_symlink()
    assert (challenge / TOKEN).read_text() == TOKEN + ".x"
    solver.cleanup([task])
    untouched(d, f)
    # A link swapped in for the directory between present and cleanup is refused.
    solver.present([task])
    (webroot / ".well-known" / "acme-challenge").rename(webroot / "moved")
    (webroot / ".well-known" / "acme-challenge").symlink_to(d)
    with pytest.raises(CertmanError) as err:
        solver.cleanup([task])
    assert err.value.code == "challenge-unsafe-path"
    untouched(d, f)
