"""``certman revoke NAME``: revoke a stored certificate at the CA."""

from __future__ import annotations

import click

from certman.cli._common import echo_json, handle_errors
from certman.cli._manager import make_manager
from certman.client import RevocationReason

REASONS = [r.label for r in RevocationReason]


@click.command("revoke")
@click.argument("name")
@click.option(
    "--reason",
    type=click.Choice(REASONS),
    default="unspecified",
    show_default=True,
    help="Revocation reason.",
)
@click.option(
    "--use-cert-key",
    is_flag=True,
    help="Sign with the certificate's own key instead of the account key "
    "(works without the issuing account, e.g. after a key compromise).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@handle_errors
def revoke_command(
    ctx: click.Context, name: str, reason: str, use_cert_key: bool, as_json: bool
) -> None:
    """Revoke the live certificate of lineage NAME.

    The files stay in place (a server keeps serving them); issue a new
    certificate with `certman issue` or `certman renew NAME --force`.

    \b
    certman revoke example.org --reason superseded
    certman revoke example.org --reason key-compromise --use-cert-key
    """
    with make_manager(ctx) as manager:
        outcome = manager.revoke(name, reason=reason, use_certificate_key=use_cert_key)
    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(f"Revoked {name} (serial {outcome.serial}, reason {reason}).")
