"""``certman migrate``: move a FileStore into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import click

from certman.cli._common import EXIT_FAILURE, echo_json, handle_errors
from certman.errors import ConfigError


@click.command("migrate")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The FileStore directory (what --home points at).",
)
@click.option(
    "--to",
    "dest",
    required=True,
    metavar="postgresql://...",
    help="The PostgreSQL store (its schema must be up to date: certman db upgrade).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
@handle_errors
def migrate_command(ctx: click.Context, source: Path, dest: str, as_json: bool) -> None:
    """Copy a FileStore (accounts, keys, every certificate version, meta) into PostgreSQL.

    Version numbers and the live version are kept. Safe to re-run: identical
    data is left alone, and a version that differs is reported as a conflict
    (exit 1), never overwritten. The FileStore is only read.

    \b
    certman db upgrade --store postgresql://certman@db1/certman
    certman migrate --from /var/lib/certman --to postgresql://certman@db1/certman
    """
    if not dest.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--to must be a postgresql:// URL", code="store-url")
    from certman.store.files import FileStore
    from certman.store.migrate import migrate_store
    from certman.store.postgres import PostgresStore

    with PostgresStore(dest) as target:
        report = migrate_store(FileStore(source), target)
        where = target.display_url
    if as_json:
        echo_json({"from": str(source), "to": where, **report.to_dict()})
    else:
        click.echo(
            f"{source} -> {where}: {report.lineages} certificates; "
            f"versions {report.versions_copied} copied, {report.versions_unchanged} already there; "
            f"accounts {report.accounts_copied} copied, {report.accounts_unchanged} already there; "
            f"meta {report.meta_copied} copied, {report.meta_unchanged} already there"
        )
        for conflict in report.conflicts:
            click.echo(f"certman: error: {conflict} [store-conflict]", err=True)
    if not report.ok:
        ctx.exit(EXIT_FAILURE)
