"""``certman db``: create and upgrade the PostgreSQL schema, and show its state."""

from __future__ import annotations

import click

from certman.cli._common import EXIT_FAILURE, echo_json, handle_errors, state
from certman.cli._store import postgres_store_option
from certman.errors import ConfigError


def postgres_store_url(ctx: click.Context) -> str:
    """The ``postgresql://`` URL from the subcommand's ``--store`` or the global one."""
    url = state(ctx).store_url
    if not url or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "this command needs a PostgreSQL store: --store postgresql://USER@HOST/DB"
            " (or CERTMAN_STORE)",
            code="store-url",
        )
    return url


@click.group("db")
def db_command() -> None:
    """Manage the PostgreSQL store's schema (cluster mode).

    \b
    Create or upgrade:  certman db upgrade --store postgresql://certman@db1/certman
    Check:              certman db status --store postgresql://certman@db1/certman

    Every other command refuses to work on a database whose schema is older
    (or newer) than this certman's, so run `db upgrade` after upgrading
    certman, before starting workers.
    """


@db_command.command("upgrade")
@postgres_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@handle_errors
def upgrade_command(ctx: click.Context, as_json: bool) -> None:
    """Create the certman tables, or apply the migrations they miss (idempotent).

    All missing migrations run in one transaction; several machines may run
    this at once (they queue on a lock).
    """
    from certman.store.postgres import SCHEMA_VERSION, PostgresStore

    with PostgresStore(postgres_store_url(ctx)) as store:
        before, after = store.upgrade()
        if as_json:
            echo_json(
                {"url": store.display_url, "from": before, "to": after, "code": SCHEMA_VERSION}
            )
        elif before == after:
            click.echo(f"{store.display_url}: schema already at version {after}")
        else:
            click.echo(f"{store.display_url}: schema upgraded from version {before} to {after}")


@db_command.command("status")
@postgres_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
@handle_errors
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show the schema version (against this certman's), row counts and lock holders.

    Exit status 1 when the schema is not the one this certman needs.
    """
    from certman.store.postgres import PostgresStore

    with PostgresStore(postgres_store_url(ctx)) as store:
        status = store.status()
        claims = store.claims() if status.up_to_date else []
    if as_json:
        doc = status.to_dict()
        doc["claims"] = [
            {
                "kind": c.kind,
                "name": c.name,
                "holder": c.holder,
                "claimed_at": c.claimed_at.isoformat(),
                "expires_at": c.expires_at.isoformat(),
                "held": c.held,
            }
            for c in claims
        ]
        echo_json(doc)
    else:
        click.echo(f"store:           {status.url}")
        click.echo(f"server:          PostgreSQL {status.server_version}")
        verdict = "up to date" if status.up_to_date else "run `certman db upgrade`"
        click.echo(
            f"schema:          version {status.database_version} "
            f"(this certman: {status.code_version}; {verdict})"
        )
        for key, value in sorted(status.counts.items()):
            click.echo(f"{key + ':':<16} {value}")
        for c in claims:
            what = "locked:" if c.held else "stale claim:"
            click.echo(f"{what:<16} {c.kind} {c.name} by {c.holder} since {c.claimed_at}")
    if not status.up_to_date:
        ctx.exit(EXIT_FAILURE)
