"""Writing a store's live certificates to local files, for the web servers of one node.

In cluster mode the certificates live in PostgreSQL, but nginx, HAProxy and
friends read files. :func:`export_live` copies every live certificate from
any :class:`~certman.store.base.Store` into a directory laid out exactly like
a FileStore's, so a web server is configured the same way whichever store a
node uses::

    DEST/certs/<name>/live/{cert,chain,fullchain,privkey}.pem
    DEST/certs/<name>/live -> archive/<version>

Each new version is written complete into a temporary directory (files
fsync-ed, private key 0600, directories 0700), renamed into ``archive/``,
and then ``live`` is switched with one ``rename(2)`` of a new symlink: a web
server reloading at any instant reads either the old pair or the new pair,
never a new certificate with an old key. The previous version is kept (a
reload in flight may still be opening it); older ones are removed.

A certificate whose live version is already exported byte for byte is left
alone, so running the export from a timer every minute costs one read per
certificate and touches nothing; the result says what changed so the caller
runs a deploy hook only then. Certificates removed from the store are left
in place (removing files a running web server is configured with would
break its next reload); delete them by hand when the server no longer uses
them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certman import _atomic
from certman.errors import CertmanError, StoreError
from certman.store.base import CertificateFiles, Store, validate_name

log = logging.getLogger(__name__)

_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_live` did: names changed, unchanged and failed (with reasons)."""

    directory: str
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "changed": list(self.changed),
            "unchanged": list(self.unchanged),
            "failed": dict(self.failed),
        }


def _contents(files: CertificateFiles) -> dict[str, bytes]:
    return {
        "cert.pem": files.cert_pem,
        "chain.pem": files.chain_pem,
        "fullchain.pem": files.fullchain_pem,
        "privkey.pem": files.privkey_pem,
    }


def _same(live: Path, wanted: dict[str, bytes]) -> bool:
    try:
        return all((live / name).read_bytes() == data for name, data in wanted.items())
    except OSError:
        return False


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise StoreError(
            f"refusing unsafe path in export directory: {path}",
            code="store-unsafe-path",
            path=str(path),
        )


def _write_version(lineage: Path, version: int, wanted: dict[str, bytes]) -> str:
    """Write archive/<version> completely; return its name relative to the lineage dir."""
    archive = lineage / "archive"
    _mkdir_private(archive)
    final = str(version)
    if (archive / final).exists():
        # The store was rebuilt and reuses a number with other content.
        final = f"{version}.{secrets.token_hex(4)}"
    tmp = archive / f".tmp-{final}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for name, data in wanted.items():
        mode = 0o600 if name == "privkey.pem" else 0o644
        _atomic.create_file(tmp / name, data, mode)
    _atomic.fsync_dir(tmp)
    os.rename(tmp, archive / final)
    _atomic.fsync_dir(archive)
    return f"archive/{final}"


def _switch_live(lineage: Path, target: str) -> None:
    tmp = lineage / f".tmp-live-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        os.rename(tmp, lineage / "live")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _atomic.fsync_dir(lineage)


def _prune(lineage: Path, keep: set[str]) -> None:
    archive = lineage / "archive"
    for entry in archive.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def export_one(store: Store, name: str, dest: Path) -> bool:
    """Export lineage ``name``'s live version under ``dest``; ``True`` if files changed."""
    validate_name(name)
    version = store.load_live(name)
    wanted = _contents(version.files)
    lineage = dest / "certs" / name
    _mkdir_private(lineage)
    live = lineage / "live"
    if live.is_symlink() and _same(live, wanted):
        return False
    previous = os.readlink(live) if live.is_symlink() else None
    target = _write_version(lineage, version.version, wanted)
    if live.exists() and not live.is_symlink():
        raise StoreError(
            f"{live} exists and is not a symlink: move it away first",
            code="store-unsafe-path",
            path=str(live),
        )
    _switch_live(lineage, target)
    keep = {target.removeprefix("archive/")}
    if previous and previous.startswith("archive/"):
        keep.add(previous.removeprefix("archive/"))
    _prune(lineage, keep)
    log.info("exported %s version %d to %s", name, version.version, lineage)
    return True


def export_live(
    store: Store, dest: str | os.PathLike[str], names: Iterable[str] | None = None
) -> ExportResult:
    """Export every live certificate (or only ``names``) from ``store`` into ``dest``.

    Never raises for one certificate's failure (it is listed in
    ``failed``); a store that cannot be read at all raises ``StoreError``.
    """
    root = Path(dest).absolute()
    wanted = list(names) if names is not None else store.list_certificates()
    try:
        _mkdir_private(root)
        _mkdir_private(root / "certs")
    except OSError as exc:
        raise StoreError(
            f"cannot create export directory {root}: {exc.strerror}",
            code="store-io",
            path=str(root),
        ) from exc
    changed: list[str] = []
    unchanged: list[str] = []
    failed: dict[str, str] = {}
    for name in wanted:
        try:
            if export_one(store, name, root):
                changed.append(name)
            else:
                unchanged.append(name)
        except StoreError as exc:
            if exc.code == "store-unavailable":
                raise
            failed[name] = f"{exc} [{exc.code}]"
        except CertmanError as exc:
            failed[name] = f"{exc} [{exc.code}]"
        except OSError as exc:
            failed[name] = f"cannot write files: {exc} [store-io]"
    return ExportResult(str(root), tuple(changed), tuple(unchanged), failed)
