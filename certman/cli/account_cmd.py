"""``certman account``: register, show, update, roll over and deactivate the ACME account.

The account lives in the store (``accounts/<ca>/<id>/``, key 0600); one per
CA directory. Nothing here ever prints key material: keys are described by
their type and their public RFC 7638 thumbprint.
"""

from __future__ import annotations

import sys

import click

from certman.cli._common import EXIT_USAGE, echo_json, handle_errors, is_tty
from certman.cli._manager import make_manager
from certman.client import ExternalAccountBinding
from certman.errors import ConfigError
from certman.keys import KeyType
from certman.manager import AccountStatus

KEY_TYPES = [k.value for k in KeyType]


@click.group("account")
def account_command() -> None:
    """Manage the ACME account used for the CA (--server / --staging).

    \b
    Register (once per CA):   certman account register --agree-tos [--email you@example.org]
    With EAB (ZeroSSL...):    certman account register --agree-tos --eab-kid KID --eab-hmac-key KEY
    See it:                   certman account show [--json]
    Change the e-mail:        certman account update --email new@example.org
    New account key:          certman account rollover
    Close the account:        certman account deactivate --yes
    """


def _render(status: AccountStatus, as_json: bool, headline: str) -> None:
    if as_json:
        echo_json(status.to_dict())
        return
    data = status.to_dict()
    click.echo(headline)
    click.echo(f"  account id:   {data['account_id']}")
    click.echo(f"  CA:           {data['directory_url']}")
    click.echo(f"  URL:          {data['uri']}")
    click.echo(f"  status:       {data['status']}")
    contacts = ", ".join(c.removeprefix("mailto:") for c in data["contact"]) or "(none)"
    click.echo(f"  contact:      {contacts}")
    click.echo(f"  key:          {data['key_type']} (thumbprint {data['key_thumbprint']})")
    if data.get("eab_key_id"):
        click.echo(f"  EAB key id:   {data['eab_key_id']}")
    click.echo(f"  created:      {data['created_at']}")


@account_command.command("register")
@click.option("--agree-tos", is_flag=True, help="Agree to the CA's terms of service (required).")
@click.option("--email", "emails", multiple=True, help="Contact e-mail (optional, repeatable).")
@click.option("--eab-kid", help="External Account Binding key id (CAs that require EAB).")
@click.option("--eab-hmac-key", help="External Account Binding HMAC key (base64url).")
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default="ec-p256",
    show_default=True,
    help="Account key type.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@click.pass_context
@handle_errors
def register_command(
    ctx: click.Context,
    agree_tos: bool,
    emails: tuple[str, ...],
    eab_kid: str | None,
    eab_hmac_key: str | None,
    key_type: str,
    as_json: bool,
) -> None:
    """Create an account at the CA and store it (does nothing if one exists).

    \b
    certman account register --agree-tos
    certman --staging account register --agree-tos --email ops@example.org
    """
    if bool(eab_kid) != bool(eab_hmac_key):
        raise ConfigError("--eab-kid and --eab-hmac-key go together", code="invalid-eab")
    eab = ExternalAccountBinding(eab_kid, eab_hmac_key) if eab_kid and eab_hmac_key else None
    with make_manager(ctx) as manager:
        existed = manager.find_account() is not None
        manager.register_account(
            agree_tos=agree_tos, email=list(emails) or None, eab=eab, key_type=key_type
        )
        status = manager.account_status(remote=False)
    headline = "Account already registered:" if existed else "Account registered:"
    _render(status, as_json, headline)


@account_command.command("show")
@click.option("--offline", is_flag=True, help="Show what the store knows; do not ask the CA.")
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@click.pass_context
@handle_errors
def show_command(ctx: click.Context, offline: bool, as_json: bool) -> None:
    """Show the account (as the CA sees it, unless --offline)."""
    with make_manager(ctx) as manager:
        status = manager.account_status(remote=not offline)
    _render(status, as_json, "Account:")


@account_command.command("update")
@click.option("--email", "emails", multiple=True, help="New contact e-mail (repeatable).")
@click.option("--no-email", is_flag=True, help="Remove every contact address.")
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@click.pass_context
@handle_errors
def update_command(
    ctx: click.Context, emails: tuple[str, ...], no_email: bool, as_json: bool
) -> None:
    """Replace the account's contact e-mail addresses.

    \b
    certman account update --email ops@example.org
    certman account update --no-email
    """
    if not emails and not no_email:
        raise ConfigError("give --email ADDRESS (or --no-email)", code="config-usage")
    with make_manager(ctx) as manager:
        manager.update_account(None if no_email else list(emails))
        status = manager.account_status(remote=False)
    _render(status, as_json, "Account updated:")


@account_command.command("rollover")
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default=None,
    help="Type of the new key (default: same as now).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@click.pass_context
@handle_errors
def rollover_command(ctx: click.Context, key_type: str | None, as_json: bool) -> None:
    """Replace the account key (RFC 8555 key change); the old key stops working.

    The new key is written to the store before the CA is asked, and the old
    one kept as key.prev.pem.
    """
    with make_manager(ctx) as manager:
        status = manager.rollover_account(key_type)
    _render(status, as_json, "Account key rolled over:")


@account_command.command("deactivate")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@click.pass_context
@handle_errors
def deactivate_command(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Deactivate the account at the CA, for good (it cannot be undone).

    Certificates already issued stay valid; renewing them needs a new account.
    """
    if not yes:
        if not is_tty(sys.stdin):
            click.echo("certman: error: deactivating needs --yes [config-usage]", err=True)
            ctx.exit(EXIT_USAGE)
        click.confirm("Deactivate the account for good?", abort=True)
    with make_manager(ctx) as manager:
        record = manager.deactivate_account()
    if as_json:
        echo_json({"account_id": record.account_id, "uri": record.uri, "status": record.status})
    else:
        click.echo(f"Account {record.account_id} ({record.uri}) is now {record.status}.")
