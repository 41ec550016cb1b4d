"""``certman export``: write the live certificates a node serves into local files."""

from __future__ import annotations

from pathlib import Path

import click

from certman.cli._common import EXIT_FAILURE, echo_json, handle_errors, state
from certman.cli._store import store_option
from certman.hooks import run_hook
from certman.store import open_store
from certman.store.export import export_live


@click.command("export")
@store_option
@click.option(
    "--to",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write DIR/certs/<name>/live/*.pem into (created 0700).",
)
@click.option(
    "-n",
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Export only this certificate (repeatable; default: all).",
)
@click.option(
    "--deploy-hook",
    "deploy_hooks",
    multiple=True,
    metavar="CMD",
    help="Shell command run once if anything changed, with CERTMAN_EXPORT_DIR and "
    "CERTMAN_CHANGED (names, space separated) set. Repeatable.",
)
@click.option(
    "--hook-timeout",
    type=click.FloatRange(1, 3600),
    default=300.0,
    show_default=True,
    help="Seconds a deploy hook may run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
@click.pass_context
@handle_errors
def export_command(
    ctx: click.Context,
    dest: Path,
    names: tuple[str, ...],
    deploy_hooks: tuple[str, ...],
    hook_timeout: float,
    as_json: bool,
) -> None:
    """Write the store's live certificates into DIR, in the FileStore's layout.

    Point the web server at DIR/certs/<name>/live/fullchain.pem and
    .../privkey.pem. Files are replaced atomically (a reload never sees a new
    certificate with an old key) and only when their content changed; the
    deploy hook runs only then. Made for a timer on every web node:

    \b
    certman export --store postgresql://certman@db1/certman --to /etc/certman \\
        --deploy-hook 'systemctl reload nginx'

    Exit status 1 if a certificate could not be exported or a hook failed.
    """
    cli = state(ctx)
    store = open_store(cli.store_url, home=cli.home)
    result = export_live(store, dest, names or None)
    hooks = []
    if result.changed:
        env = {"CERTMAN_EXPORT_DIR": result.directory, "CERTMAN_CHANGED": " ".join(result.changed)}
        hooks = [
            run_hook(cmd, kind="deploy", env=env, timeout=hook_timeout) for cmd in deploy_hooks
        ]
    failed_hooks = [h for h in hooks if not h.ok]
    if as_json:
        doc = result.to_dict()
        doc["hooks"] = [h.to_dict() for h in hooks]
        echo_json(doc)
    else:
        click.echo(
            f"{result.directory}: {len(result.changed)} changed, "
            f"{len(result.unchanged)} unchanged, {len(result.failed)} failed"
        )
        for name in result.changed:
            click.echo(f"  updated {name}")
        for name, reason in sorted(result.failed.items()):
            click.echo(f"certman: error: {name}: {reason}", err=True)
        for h in failed_hooks:
            click.echo(f"certman: error: {h.summary}", err=True)
    if not result.ok or failed_hooks:
        ctx.exit(EXIT_FAILURE)
