"""``FileStore``: the embedded default store, a directory tree on one machine.

Layout under the root (see ``docs/store.md``)::

    accounts/<ca-key>/<account-id>/account.json    0600, dirs 0700
    accounts/<ca-key>/<account-id>/key.pem         0600 (key.prev.pem after a rollover)
    certs/<name>/archive/<n>/{cert,chain,fullchain,privkey}.pem
    certs/<name>/live -> archive/<n>               one relative directory symlink
    certs/<name>/meta.json
    tokens/<token>                                 HTTP-01 key authorizations
    locks/certs/<name>.lock, locks/accounts/<ca-key>/<account-id>.lock

Why ``live`` is a single directory symlink: switching versions is then one
``rename(2)`` of a fresh symlink over the old one, which POSIX makes atomic.
A real ``live/`` directory of per-file symlinks would need four renames (a
reader could pair the new certificate with the old key in between), and a
non-empty directory cannot be renamed over another. Users still point their
server at ``certs/<name>/live/fullchain.pem`` and ``.../live/privkey.pem``.

Safety rules kept by every write:
- temp file in the same directory, written, ``fsync``-ed, renamed over the
  target, then the directory ``fsync``-ed;
- every path component below the root is opened with ``O_NOFOLLOW`` relative
  to its parent's descriptor, so a symlink planted inside the store (by a
  less-privileged user with write access to some directory) is refused
  (``store-unsafe-path``), never followed; the root itself may be a symlink;
- directories are created 0700, private keys and account files 0600.

A new archive version is written in a ``.tmp-*`` directory and renamed into
place complete; a crash before the ``live`` switch leaves the previous
version live, and the next save picks a higher number and removes the
debris.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certman import _atomic
from certman.challenges.http01 import is_valid_token
from certman.errors import StoreError
from certman.store.base import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    CertificateVersion,
    Store,
    account_doc,
    ca_key,
    corrupt,
    meta_doc,
    newest_valid_account,
    not_found,
    parse_account,
    parse_meta,
    sorted_accounts,
    validate_name,
)

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PEM_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
_LIVE_TARGET = re.compile(r"archive/([1-9][0-9]{0,8})")
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,8}")
_TMP_PREFIX = ".tmp-"


def default_root(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Where the store lives when no path is given.

    ``$CERTMAN_HOME``, else ``$STATE_DIRECTORY`` (set by systemd's
    ``StateDirectory=``; the first of a ``:``-separated list), else
    ``/var/lib/certman`` for root and ``~/.local/share/certman`` (honouring
    ``$XDG_DATA_HOME``) for anyone else.
    """
    env = os.environ if env is None else env
    if env.get("CERTMAN_HOME"):
        return Path(env["CERTMAN_HOME"]).expanduser()
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":", 1)[0])
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/certman")
    data_home = env.get("XDG_DATA_HOME")
    base = Path(data_home) if data_home else Path(env.get("HOME") or Path.home()) / ".local/share"
    return base / "certman"


class _ProcessLock:
    """A lock file held with ``flock``, plus an RLock for the threads of this process.

    ``flock`` locks belong to an open file description, so two descriptors in
    one process already exclude each other; the RLock adds re-entrancy for
    one thread (``save_certificate`` inside ``lock_certificate``) and lets
    waiting threads block without polling the file.
    """

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_LOCKS: dict[tuple[str, ...], _ProcessLock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(key: tuple[str, ...]) -> _ProcessLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _ProcessLock()
        return lock


class FileStore:
    """The :class:`~certman.store.base.Store` kept in a directory tree.

    ``root``: an explicit directory, else :func:`default_root`. The root is
    created (0700) if missing. Safe to share between threads and processes;
    holds no open files between calls except held locks.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        path = Path(root).expanduser() if root is not None else default_root()
        self.root = path.absolute()
        try:
            if not self.root.exists():
                self.root.mkdir(mode=0o700, parents=True)
                self.root.chmod(0o700)
            elif not self.root.is_dir():
                raise StoreError(
                    f"store root is not a directory: {self.root}",
                    code="store-unsafe-path",
                    path=str(self.root),
                )
        except OSError as exc:
            raise StoreError(
                f"cannot create store root {self.root}: {exc.strerror}",
                code="store-io",
                path=str(self.root),
            ) from exc
        self._root_key = str(self.root.resolve())
        with contextlib.suppress(OSError):
            if self.root.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning(
                    "store root %s is writable by other users: they could plant "
                    "files there; chmod 700 it",
                    self.root,
                )

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    # -- low-level, descriptor-relative file operations -------------------

    def _where(self, parts: Sequence[str], name: str | None = None) -> str:
        path = self.root.joinpath(*parts)
        return str(path / name) if name else str(path)

    def _io_error(self, exc: OSError, parts: Sequence[str], name: str | None = None) -> StoreError:
        where = self._where(parts, name)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY):
            return StoreError(
                f"refusing unsafe path in store (symlink or wrong file type): {where}",
                code="store-unsafe-path",
                path=where,
            )
        return StoreError(
            f"store I/O error at {where}: {exc.strerror or exc}", code="store-io", path=where
        )

    @contextlib.contextmanager
    def _dir(self, parts: Sequence[str], *, create: bool) -> Iterator[int]:
        """Open ``root/parts...`` without following symlinks below the root.

        Missing components are created 0700 when ``create``; otherwise
        ``FileNotFoundError`` propagates for the caller to turn into
        ``store-not-found``.
        """
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if not create:
                raise
            raise StoreError(
                f"store root {self.root} has disappeared", code="store-io", path=str(self.root)
            ) from exc
        except OSError as exc:
            raise self._io_error(exc, ()) from exc
        try:
            for i, part in enumerate(parts):
                try:
                    nfd = _open_child_dir(fd, part, create=create)
                except FileNotFoundError:
                    if not create:
                        raise
                    raise StoreError(
                        f"store directory vanished while in use: {self._where(parts[: i + 1])}",
                        code="store-io",
                        path=self._where(parts[: i + 1]),
                    ) from None
                except OSError as exc:
                    raise self._io_error(exc, parts[: i + 1]) from exc
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def _write(
        self, dfd: int, name: str, data: bytes, mode: int, parts: Sequence[str] = ()
    ) -> None:
        """Atomically replace ``name`` in directory ``dfd`` with ``data``.

        The rename replaces a planted symlink at ``name`` rather than writing
        through it. An I/O error (ENOSPC, EIO), including the directory fsync
        after the rename, is a ``store-io`` StoreError.
        """
        try:
            _atomic.replace_at(dfd, name, data, mode, tmp_prefix=f"{_TMP_PREFIX}{name}-")
        except OSError as exc:
            raise self._io_error(exc, parts, name) from exc

    def _fsync_dir(self, dfd: int, parts: Sequence[str], name: str | None = None) -> None:
        """fsync a directory after a rename in it; an I/O error (ENOSPC, EIO) is a StoreError."""
        try:
            os.fsync(dfd)
        except OSError as exc:
            raise self._io_error(exc, parts, name) from exc

    def _create(self, dfd: int, name: str, data: bytes, mode: int, parts: Sequence[str]) -> None:
        """Create a new file (``O_EXCL``) and fsync it; for private temp directories."""
        try:
            _atomic.create_file(name, data, mode, dir_fd=dfd)
        except OSError as exc:
            raise self._io_error(exc, parts, name) from exc

    def _read(self, dfd: int, name: str, parts: Sequence[str] = ()) -> bytes:
        """Read ``name`` without following a symlink; ``FileNotFoundError`` propagates."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._io_error(exc, parts, name) from exc
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def _write_json(self, parts: Sequence[str], name: str, doc: Mapping[str, Any]) -> None:
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        with self._dir(parts, create=True) as dfd:
            self._write(dfd, name, data, 0o600, parts)

    def _read_json(self, parts: Sequence[str], name: str) -> Any:
        """Parsed JSON, ``FileNotFoundError`` if absent, ``store-corrupt`` if unreadable."""
        with self._dir(parts, create=False) as dfd:
            raw = self._read(dfd, name, parts)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise corrupt(self._where(parts, name), f"not valid JSON ({exc})") from exc

    # -- accounts ------------------------------------------------------------

    def _account_parts(self, directory_url: str, account_id: str) -> tuple[str, ...]:
        return ("accounts", ca_key(directory_url), validate_name(account_id, what="account id"))

    def _parse_account(self, parts: Sequence[str], doc: Any) -> AccountRecord:
        return parse_account(doc, self._where(parts, "account.json"))

    def save_account(self, account: AccountRecord, key_pem: bytes) -> None:
        parts = self._account_parts(account.directory_url, account.account_id)
        doc = account_doc(account)
        with self._dir(parts, create=True) as dfd:
            self._write(dfd, "key.pem", key_pem, 0o600, parts)
            self._write(dfd, "account.json", _json_bytes(doc), 0o600, parts)
        log.info("saved account %s for %s", account.account_id, account.directory_url)

    def update_account(self, account: AccountRecord) -> None:
        parts = self._account_parts(account.directory_url, account.account_id)
        doc = account_doc(account)
        try:
            with self._dir(parts, create=False) as dfd:
                os.stat("account.json", dir_fd=dfd, follow_symlinks=False)
                self._write(dfd, "account.json", _json_bytes(doc), 0o600, parts)
        except FileNotFoundError as exc:
            raise not_found(
                f"account {account.account_id} for {account.directory_url}",
                path=self._where(parts),
            ) from exc

    def save_account_key(self, directory_url: str, account_id: str, key_pem: bytes) -> None:
        parts = self._account_parts(directory_url, account_id)
        try:
            with self._dir(parts, create=False) as dfd:
                old = self._read(dfd, "key.pem", parts)
                self._write(dfd, "key.prev.pem", old, 0o600, parts)
                self._write(dfd, "key.pem", key_pem, 0o600, parts)
        except FileNotFoundError as exc:
            raise not_found(
                f"account {account_id} for {directory_url}", path=self._where(parts)
            ) from exc

    def load_account(self, directory_url: str, account_id: str) -> AccountRecord:
        parts = self._account_parts(directory_url, account_id)
        try:
            doc = self._read_json(parts, "account.json")
        except FileNotFoundError as exc:
            raise not_found(
                f"account {account_id} for {directory_url}", path=self._where(parts)
            ) from exc
        return self._parse_account(parts, doc)

    def load_account_key(self, directory_url: str, account_id: str) -> bytes:
        parts = self._account_parts(directory_url, account_id)
        try:
            with self._dir(parts, create=False) as dfd:
                return self._read(dfd, "key.pem", parts)
        except FileNotFoundError as exc:
            raise not_found(
                f"key of account {account_id} for {directory_url}",
                path=self._where(parts, "key.pem"),
            ) from exc

    def load_previous_account_key(self, directory_url: str, account_id: str) -> bytes | None:
        """The key replaced by the last :meth:`save_account_key` (``key.prev.pem``), if any."""
        parts = self._account_parts(directory_url, account_id)
        try:
            with self._dir(parts, create=False) as dfd:
                return self._read(dfd, "key.prev.pem", parts)
        except FileNotFoundError:
            return None

    def list_accounts(self, directory_url: str | None = None) -> list[AccountRecord]:
        cas = [ca_key(directory_url)] if directory_url else self._list_dir(("accounts",))
        out: list[AccountRecord] = []
        for ca in cas:
            for account_id in self._list_dir(("accounts", ca)):
                parts = ("accounts", ca, account_id)
                try:
                    doc = self._read_json(parts, "account.json")
                except FileNotFoundError:
                    continue  # a half-created account directory: no record yet
                record = self._parse_account(parts, doc)
                if directory_url is None or record.directory_url == directory_url:
                    out.append(record)
        return sorted_accounts(out)

    def find_account(self, directory_url: str) -> AccountRecord | None:
        return newest_valid_account(self.list_accounts(directory_url))

    def _list_dir(self, parts: Sequence[str]) -> list[str]:
        """Valid names in a store directory (temp debris and odd names skipped)."""
        try:
            with self._dir(parts, create=False) as dfd:
                names = os.listdir(dfd)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(".") and _is_valid_name(n))

    # -- certificates ----------------------------------------------------------

    def save_certificate(
        self, name: str, files: CertificateFiles, meta: CertificateMeta | None = None
    ) -> CertificateVersion:
        validate_name(name)
        if meta is not None and meta.name != name:
            raise StoreError(
                f"meta is for {meta.name!r}, not {name!r}", code="store-bad-name", name=name
            )
        with self.lock_certificate(name):
            version = self._write_version(name, files)
            self._switch_live(name, version)
            if meta is not None:
                self.save_meta(meta)
        log.info("certificate %s: version %d is live", name, version)
        return self.load_version(name, version)

    def _write_version(self, name: str, files: CertificateFiles) -> int:
        """Write archive/<n> completely (via a temp dir + rename); return n."""
        parts = ("certs", name, "archive")
        with self._dir(parts, create=True) as adfd:
            existing = os.listdir(adfd)
            for entry in existing:
                if entry.startswith(_TMP_PREFIX):
                    log.info("certificate %s: removing unfinished version %s", name, entry)
                    shutil.rmtree(entry, dir_fd=adfd)
            numbers = [int(e) for e in existing if _VERSION_DIR.fullmatch(e)]
            version = max(numbers, default=0) + 1
            tmp = f"{_TMP_PREFIX}{version}-{secrets.token_hex(6)}"
            try:
                os.mkdir(tmp, 0o700, dir_fd=adfd)
                vfd = os.open(tmp, _DIR_FLAGS, dir_fd=adfd)
            except OSError as exc:
                raise self._io_error(exc, parts, tmp) from exc
            try:
                os.fchmod(vfd, 0o700)
                vparts = (*parts, tmp)
                # The temp directory is private until renamed, so its files
                # need no rename of their own: create, write, fsync each, then
                # fsync the directory once.
                for fname, data, fmode in (
                    ("cert.pem", files.cert_pem, 0o644),
                    ("chain.pem", files.chain_pem, 0o644),
                    ("fullchain.pem", files.fullchain_pem, 0o644),
                    ("privkey.pem", files.privkey_pem, 0o600),
                ):
                    self._create(vfd, fname, data, fmode, vparts)
                self._fsync_dir(vfd, vparts)
            finally:
                os.close(vfd)
            try:
                os.rename(tmp, str(version), src_dir_fd=adfd, dst_dir_fd=adfd)
            except OSError as exc:
                raise self._io_error(exc, parts, str(version)) from exc
            self._fsync_dir(adfd, parts, str(version))
        return version

    def _switch_live(self, name: str, version: int) -> None:
        """Point ``live`` at archive/<version> with one rename of a new symlink."""
        parts = ("certs", name)
        with self._dir(parts, create=False) as cfd:
            for entry in os.listdir(cfd):
                if entry.startswith(_TMP_PREFIX + "live"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry, dir_fd=cfd)
            tmp = f"{_TMP_PREFIX}live-{secrets.token_hex(6)}"
            try:
                os.symlink(f"archive/{version}", tmp, dir_fd=cfd)
                os.rename(tmp, "live", src_dir_fd=cfd, dst_dir_fd=cfd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=cfd)
                raise self._io_error(exc, parts, "live") from exc
            self._fsync_dir(cfd, parts, "live")

    def _live_version(self, cfd: int, parts: Sequence[str]) -> int:
        try:
            target = os.readlink("live", dir_fd=cfd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise corrupt(self._where(parts, "live"), "not a symlink") from exc
            raise self._io_error(exc, parts, "live") from exc
        match = _LIVE_TARGET.fullmatch(target)
        if match is None:
            raise corrupt(self._where(parts, "live"), f"unexpected target {target!r}")
        return int(match.group(1))

    def _read_version(self, name: str, version: int) -> CertificateVersion:
        parts = ("certs", name, "archive", str(version))
        with self._dir(parts, create=False) as vfd:
            data = [self._read(vfd, f, parts) for f in _PEM_FILES]
            mtime = os.stat("cert.pem", dir_fd=vfd, follow_symlinks=False).st_mtime
        return CertificateVersion(
            name=name,
            version=version,
            files=CertificateFiles(*data),
            saved_at=datetime.fromtimestamp(mtime, UTC),
        )

    def load_live(self, name: str) -> CertificateVersion:
        validate_name(name)
        parts = ("certs", name)
        try:
            with self._dir(parts, create=False) as cfd:
                version = self._live_version(cfd, parts)
        except FileNotFoundError as exc:
            raise not_found(f"certificate {name!r}", name=name) from exc
        try:
            return self._read_version(name, version)
        except FileNotFoundError as exc:
            raise corrupt(
                self._where(parts, "live"), f"points at missing or incomplete version {version}"
            ) from exc

    def load_version(self, name: str, version: int) -> CertificateVersion:
        validate_name(name)
        if not isinstance(version, int) or version < 1:
            raise not_found(f"version {version!r} of certificate {name!r}", name=name)
        try:
            return self._read_version(name, version)
        except FileNotFoundError as exc:
            raise not_found(
                f"version {version} of certificate {name!r}", name=name, version=version
            ) from exc

    def list_versions(self, name: str) -> list[int]:
        validate_name(name)
        parts = ("certs", name, "archive")
        try:
            with self._dir(parts, create=False) as adfd:
                out = []
                for entry in os.listdir(adfd):
                    if _VERSION_DIR.fullmatch(entry) and self._complete(adfd, entry):
                        out.append(int(entry))
        except FileNotFoundError:
            return []
        return sorted(out)

    @staticmethod
    def _complete(adfd: int, entry: str) -> bool:
        try:
            if not stat.S_ISDIR(os.stat(entry, dir_fd=adfd, follow_symlinks=False).st_mode):
                return False
            vfd = os.open(entry, _DIR_FLAGS, dir_fd=adfd)
        except OSError:
            return False
        try:
            for f in _PEM_FILES:
                st = os.stat(f, dir_fd=vfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    return False
        except OSError:
            return False
        finally:
            os.close(vfd)
        return True

    def list_certificates(self) -> list[str]:
        out = []
        for name in self._list_dir(("certs",)):
            try:
                with self._dir(("certs", name), create=False) as cfd:
                    st = os.stat("live", dir_fd=cfd, follow_symlinks=False)
            except (FileNotFoundError, StoreError):
                continue
            if stat.S_ISLNK(st.st_mode):
                out.append(name)
        return out

    def delete_certificate(self, name: str) -> None:
        validate_name(name)
        with self.lock_certificate(name):
            try:
                with self._dir(("certs",), create=False) as dfd:
                    gone = f".deleted-{name}-{secrets.token_hex(6)}"
                    try:
                        os.rename(name, gone, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except FileNotFoundError:
                        return
                    os.fsync(dfd)
                    shutil.rmtree(gone, dir_fd=dfd)
            except FileNotFoundError:
                return
        log.info("certificate %s deleted", name)

    def certificate_location(self, name: str) -> str:
        return str(self.live_dir(name))

    def live_dir(self, name: str) -> Path:
        """``<root>/certs/<name>/live``: point a web server at the files in it."""
        return self.root / "certs" / validate_name(name) / "live"

    def live_paths(self, name: str) -> dict[str, Path]:
        """Paths of the four live files, keyed ``cert``, ``chain``, ``fullchain``, ``privkey``."""
        live = self.live_dir(name)
        return {f.removesuffix(".pem"): live / f for f in _PEM_FILES}

    # -- meta ------------------------------------------------------------------

    def save_meta(self, meta: CertificateMeta) -> None:
        validate_name(meta.name)
        self._write_json(("certs", meta.name), "meta.json", meta_doc(meta))

    def load_meta(self, name: str) -> CertificateMeta:
        meta = self.find_meta(name)
        if meta is None:
            raise not_found(f"meta of certificate {name!r}", name=name)
        return meta

    def find_meta(self, name: str) -> CertificateMeta | None:
        validate_name(name)
        parts = ("certs", name)
        try:
            doc = self._read_json(parts, "meta.json")
        except FileNotFoundError:
            return None
        return parse_meta(doc, name, self._where(parts, "meta.json"))

    # -- tokens ----------------------------------------------------------------

    def put_token(self, token: str, key_authorization: str) -> None:
        if not is_valid_token(token):
            raise StoreError(f"invalid HTTP-01 token {token!r}", code="store-bad-name")
        with self._dir(("tokens",), create=True) as dfd:
            self._write(dfd, token, key_authorization.encode("ascii"), 0o600, ("tokens",))

    def get_token(self, token: str) -> str | None:
        if not is_valid_token(token):
            return None
        try:
            with self._dir(("tokens",), create=False) as dfd:
                return self._read(dfd, token, ("tokens",)).decode("ascii", "replace")
        except FileNotFoundError:
            return None

    def delete_token(self, token: str) -> None:
        if not is_valid_token(token):
            return
        try:
            with self._dir(("tokens",), create=False) as dfd:
                os.unlink(token, dir_fd=dfd)
                os.fsync(dfd)
        except FileNotFoundError:
            return

    def purge_tokens(self, now: datetime, max_age: timedelta = timedelta(days=1)) -> int:
        """Delete tokens published more than ``max_age`` before ``now``; return how many.

        Tokens are normally withdrawn by the solver's cleanup; this removes
        the ones left behind by a process that died mid-order.
        """
        cutoff = (now - max_age).timestamp()
        removed = 0
        try:
            with self._dir(("tokens",), create=False) as dfd:
                for entry in os.listdir(dfd):
                    if not (is_valid_token(entry) or entry.startswith(_TMP_PREFIX)):
                        continue
                    try:
                        if os.stat(entry, dir_fd=dfd, follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry, dir_fd=dfd)
                            removed += 1
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return 0
        return removed

    # -- locks -----------------------------------------------------------------

    def lock_certificate(
        self, name: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        validate_name(name)
        return self._locked(("locks", "certs"), f"{name}.lock", timeout, f"certificate {name!r}")

    def try_lock_certificate(self, name: str) -> contextlib.AbstractContextManager[bool]:
        validate_name(name)
        return self._try_locked(("locks", "certs"), f"{name}.lock")

    def lock_account(
        self, directory_url: str, account_id: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        _, ca, aid = self._account_parts(directory_url, account_id)
        return self._locked(("locks", "accounts", ca), f"{aid}.lock", timeout, f"account {aid}")

    def try_lock_account(
        self, directory_url: str, account_id: str
    ) -> contextlib.AbstractContextManager[bool]:
        _, ca, aid = self._account_parts(directory_url, account_id)
        return self._try_locked(("locks", "accounts", ca), f"{aid}.lock")

    @contextlib.contextmanager
    def _locked(
        self, parts: tuple[str, ...], name: str, timeout: float | None, what: str
    ) -> Iterator[None]:
        lock = _process_lock((self._root_key, *parts, name))
        if not self._acquire(lock, parts, name, timeout):
            raise StoreError(
                f"{what} is locked by another certman run",
                code="store-locked",
                path=self._where(parts, name),
            )
        try:
            yield
        finally:
            self._release(lock)

    @contextlib.contextmanager
    def _try_locked(self, parts: tuple[str, ...], name: str) -> Iterator[bool]:
        lock = _process_lock((self._root_key, *parts, name))
        got = self._acquire(lock, parts, name, 0)
        try:
            yield got
        finally:
            if got:
                self._release(lock)

    def _acquire(
        self, lock: _ProcessLock, parts: tuple[str, ...], name: str, timeout: float | None
    ) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if timeout is None:
            got = lock.rlock.acquire()
        elif timeout <= 0:
            got = lock.rlock.acquire(blocking=False)
        else:
            got = lock.rlock.acquire(timeout=timeout)
        if not got:
            return False
        if lock.depth > 0:
            lock.depth += 1
            return True
        try:
            with self._dir(parts, create=True) as dfd:
                try:
                    fd = os.open(
                        name,
                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                        dir_fd=dfd,
                    )
                except OSError as exc:
                    raise self._io_error(exc, parts, name) from exc
            if not _flock(fd, deadline):
                os.close(fd)
                lock.rlock.release()
                return False
        except BaseException:
            lock.rlock.release()
            raise
        lock.fd = fd
        lock.depth = 1
        return True

    @staticmethod
    def _release(lock: _ProcessLock) -> None:
        lock.depth -= 1
        if lock.depth == 0 and lock.fd is not None:
            fd, lock.fd = lock.fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        lock.rlock.release()


def _open_child_dir(fd: int, part: str, *, create: bool) -> int:
    """Open directory ``part`` under ``fd`` with O_NOFOLLOW, creating it 0700 if asked."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(part, 0o700, dir_fd=fd)
    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
    try:
        os.fchmod(nfd, 0o700)  # mkdir's mode is filtered by the umask
        os.fsync(fd)
    except BaseException:
        os.close(nfd)
        raise
    return nfd


def _flock(fd: int, deadline: float | None) -> bool:
    """Take an exclusive flock, waiting until ``deadline`` (``None``: forever)."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    # flock has no timeout; poll with a short, growing interval instead.
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)


def _json_bytes(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except StoreError:
        return False
    return True


def _conforms(store: FileStore) -> Store:
    # mypy proves here that FileStore implements the Store protocol in full.
    return store
