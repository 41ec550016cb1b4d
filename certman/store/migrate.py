"""Moving a FileStore into a PostgresStore without losing anything.

:func:`migrate_store` copies accounts (record, key, and the key before the
last rollover), every certificate version (keeping its number and which one
is live, so history and ``list_versions`` look the same), and every meta,
including meta of lineages whose first issuance failed. HTTP-01 tokens are
not copied: they only live for the seconds of an order.

Re-running it is safe: what is already there and identical is left alone
(counted as ``unchanged``); a certificate version that exists with
*different* content is a conflict, reported and not overwritten. Each
lineage is copied under its lock in the destination, so a migration can run
while workers already use the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from certman.errors import StoreError
from certman.store.base import validate_name
from certman.store.files import FileStore
from certman.store.postgres import PostgresStore

log = logging.getLogger(__name__)


@dataclass
class MigrationReport:
    """Counts of what was copied, found identical, or in conflict."""

    accounts_copied: int = 0
    accounts_unchanged: int = 0
    versions_copied: int = 0
    versions_unchanged: int = 0
    meta_copied: int = 0
    meta_unchanged: int = 0
    lineages: int = 0
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def to_dict(self) -> dict[str, Any]:
        return {
            "accounts": {"copied": self.accounts_copied, "unchanged": self.accounts_unchanged},
            "versions": {"copied": self.versions_copied, "unchanged": self.versions_unchanged},
            "meta": {"copied": self.meta_copied, "unchanged": self.meta_unchanged},
            "lineages": self.lineages,
            "conflicts": list(self.conflicts),
        }


def _lineages(source: FileStore) -> list[str]:
    """Every lineage directory, with or without a live version."""
    certs = source.root / "certs"
    if not certs.is_dir():
        return []
    out = []
    for entry in sorted(certs.iterdir()):
        try:
            validate_name(entry.name)
        except StoreError:
            continue  # temp debris (.deleted-*, .tmp-*) and odd names
        if entry.is_dir() and not entry.is_symlink():
            out.append(entry.name)
    return out


def _migrate_accounts(source: FileStore, dest: PostgresStore, report: MigrationReport) -> None:
    for record in source.list_accounts():
        key = source.load_account_key(record.directory_url, record.account_id)
        prev = source.load_previous_account_key(record.directory_url, record.account_id)
        try:
            existing = dest.load_account(record.directory_url, record.account_id)
            existing_key: bytes | None = dest.load_account_key(
                record.directory_url, record.account_id
            )
            existing_prev = dest.load_previous_account_key(record.directory_url, record.account_id)
        except StoreError as exc:
            if exc.code != "store-not-found":
                raise
            existing, existing_key, existing_prev = None, None, None
        if existing == record and existing_key == key and (prev is None or existing_prev == prev):
            report.accounts_unchanged += 1
            continue
        if prev is not None:
            # save_account_key keeps the key it replaces as the previous one.
            dest.save_account(record, prev)
            dest.save_account_key(record.directory_url, record.account_id, key)
        else:
            dest.save_account(record, key)
        report.accounts_copied += 1
        log.info("migrated account %s for %s", record.account_id, record.directory_url)


def _migrate_lineage(
    source: FileStore, dest: PostgresStore, name: str, report: MigrationReport
) -> None:
    report.lineages += 1
    try:
        live_version: int | None = source.load_live(name).version
    except StoreError as exc:
        if exc.code != "store-not-found":
            raise
        live_version = None
    for number in source.list_versions(name):
        version = source.load_version(name, number)
        try:
            copied = dest.import_version(
                name,
                number,
                version.files,
                live=number == live_version,
                saved_at=version.saved_at,
            )
        except StoreError as exc:
            if exc.code != "store-conflict":
                raise
            report.conflicts.append(str(exc))
            continue
        if copied:
            report.versions_copied += 1
        else:
            report.versions_unchanged += 1
    meta = source.find_meta(name)
    if meta is not None:
        if dest.find_meta(name) == meta:
            report.meta_unchanged += 1
        else:
            dest.save_meta(meta)
            report.meta_copied += 1


def migrate_store(source: FileStore, dest: PostgresStore) -> MigrationReport:
    """Copy everything but tokens from ``source`` into ``dest`` (idempotent)."""
    report = MigrationReport()
    dest.check_schema()
    _migrate_accounts(source, dest, report)
    for name in _lineages(source):
        _migrate_lineage(source, dest, name, report)
    return report
