"""The ``certman`` command: parse flags, call the library, render.

No logic lives here. Each subcommand is its own module, imported only when it
is run (``LazyGroup``), so ``certman --help`` and a cron-driven
``certman renew`` do not pay for importing the whole library.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import click

from certman._version import __version__
from certman.cli._common import CliState

# name -> "module:attribute". Add a line here when adding a command.
COMMANDS: dict[str, str] = {
    "account": "certman.cli.account_cmd:account_command",
    "issue": "certman.cli.issue_cmd:issue_command",
    "list": "certman.cli.list_cmd:list_command",
    "renew": "certman.cli.renew_cmd:renew_command",
    "revoke": "certman.cli.revoke_cmd:revoke_command",
    "inspect": "certman.cli.inspect_cmd:inspect_command",
    "metrics": "certman.cli.metrics_cmd:metrics_command",
    "scan": "certman.cli.scan_cmd:scan_command",
    "db": "certman.cli.db_cmd:db_command",
    "export": "certman.cli.export_cmd:export_command",
    "migrate": "certman.cli.migrate_cmd:migrate_command",
    "serve-http01": "certman.cli.serve_cmd:serve_command",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="certman")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CERTMAN_HOME",
    help="State directory (default: $STATE_DIRECTORY, else /var/lib/certman "
    "for root, ~/.local/share/certman otherwise). Env: CERTMAN_HOME.",
)
@click.option(
    "--store",
    "store_url",
    envvar="CERTMAN_STORE",
    help="Shared store URL (postgresql://...) instead of --home. Env: CERTMAN_STORE.",
)
@click.option(
    "--server",
    envvar="CERTMAN_SERVER",
    help="ACME directory URL (default: Let's Encrypt production). Env: CERTMAN_SERVER.",
)
@click.option("--staging", is_flag=True, help="Use Let's Encrypt's staging directory.")
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="CERTMAN_CA_BUNDLE",
    help="PEM file of CA certificates to trust for the ACME server (private CAs).",
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.pass_context
def main(
    ctx: click.Context,
    home: Path | None,
    store_url: str | None,
    server: str | None,
    staging: bool,
    ca_bundle: Path | None,
    verbose: int,
) -> None:
    """certman: Let's Encrypt certificates, issued, renewed and inspected.

    \b
    Get a certificate:      certman issue -d example.org --standalone --agree-tos
    Renew what is due:      certman renew
    Audit a fleet:          certman scan /etc/ssl --fail-on high
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="certman: %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliState(
        home=home,
        store_url=store_url,
        server=server,
        staging=staging,
        ca_bundle=ca_bundle,
        verbose=verbose,
    )


__all__ = ["main"]
