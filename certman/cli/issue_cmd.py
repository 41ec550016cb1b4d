"""``certman issue``: get a certificate for one or more names and store it."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from certman.cli._common import echo_json, handle_errors
from certman.cli._manager import fmt_time, hook_options, make_manager, solver_spec
from certman.cli._store import store_option
from certman.client import ExternalAccountBinding
from certman.errors import ConfigError
from certman.keys import KeyType

KEY_TYPES = [k.value for k in KeyType]


@click.command("issue")
@store_option
@click.option(
    "-d",
    "--domain",
    "domains",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A name for the certificate: DNS name, *.wildcard (needs --dns-hook) or IP "
    "address. Repeat for more; the first is the main name.",
)
@click.option("--name", "lineage", metavar="LINEAGE", help="Store name (default: the first name).")
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default="ec-p256",
    show_default=True,
    help="Certificate key type.",
)
@click.option("--profile", help="ACME profile to ask for (the CA must offer it).")
@click.option("--preferred-chain", metavar="ISSUER_CN", help="Prefer the chain up to this issuer.")
@click.option("--standalone", is_flag=True, help="Answer HTTP-01 with a built-in responder.")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Where --standalone listens (default: port 80 on every address).",
)
@click.option(
    "--webroot",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Answer HTTP-01 by writing files under DIR/.well-known/acme-challenge/.",
)
@click.option(
    "--dns-hook",
    metavar="CMD",
    help="Answer DNS-01 with CMD set|clear RECORD VALUE (see docs/challenges.md).",
)
@click.option(
    "--http01-store",
    is_flag=True,
    help="Answer HTTP-01 by publishing tokens in the store, for `certman serve-http01` "
    "or the WSGI app on every node (cluster mode, with --store postgresql://...).",
)
@click.option("--agree-tos", is_flag=True, help="Register an account first if there is none.")
@click.option("--email", "emails", multiple=True, help="Contact e-mail for a new account.")
@click.option("--eab-kid", help="External Account Binding key id for a new account.")
@click.option("--eab-hmac-key", help="External Account Binding HMAC key for a new account.")
@hook_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@handle_errors
def issue_command(
    ctx: click.Context,
    domains: tuple[str, ...],
    lineage: str | None,
    key_type: str,
    profile: str | None,
    preferred_chain: str | None,
    standalone: bool,
    listen: str | None,
    webroot: str | None,
    dns_hook: str | None,
    http01_store: bool,
    agree_tos: bool,
    emails: tuple[str, ...],
    eab_kid: str | None,
    eab_hmac_key: str | None,
    pre_hook: tuple[str, ...],
    deploy_hook: tuple[str, ...],
    post_hook: tuple[str, ...],
    as_json: bool,
) -> None:
    """Get a certificate for NAMEs from the CA and store it as the live one.

    The challenge method and hooks are remembered, so `certman renew` renews
    the certificate the same way, unattended.

    \b
    certman issue -d example.org -d www.example.org --standalone --agree-tos
    certman issue -d example.org --webroot /var/www/html --deploy-hook 'systemctl reload nginx'
    certman issue -d '*.example.org' --dns-hook /usr/local/bin/dns-hook
    certman issue -d 192.0.2.10 --standalone --listen 192.0.2.10:80

    Files end up in <home>/certs/<name>/live/{fullchain,privkey,cert,chain}.pem.
    """
    spec = solver_spec(standalone, listen, webroot, dns_hook, http01_store)
    if bool(eab_kid) != bool(eab_hmac_key):
        raise ConfigError("--eab-kid and --eab-hmac-key go together", code="invalid-eab")
    eab = ExternalAccountBinding(eab_kid, eab_hmac_key) if eab_kid and eab_hmac_key else None
    with make_manager(ctx, default_solver=spec) as manager:
        manager.ensure_account(agree_tos=agree_tos, email=list(emails) or None, eab=eab)
        outcome = manager.issue(
            list(domains),
            name=lineage,
            key_type=key_type,
            profile=profile,
            preferred_chain=preferred_chain,
            pre_hook=pre_hook,
            deploy_hook=deploy_hook,
            post_hook=post_hook,
        )
    if as_json:
        echo_json(outcome.to_dict())
        return
    days = (outcome.not_after - datetime.now(UTC)).days if outcome.not_after is not None else None
    click.echo(f"Certificate for {', '.join(outcome.names)} is live (version {outcome.version}).")
    click.echo(f"  fullchain: {outcome.location}/fullchain.pem")
    click.echo(f"  privkey:   {outcome.location}/privkey.pem")
    click.echo(f"  expires:   {fmt_time(outcome.not_after)} ({days} days)")
    for hook in outcome.hooks:
        if not hook.ok:
            click.echo(f"  warning: {hook.summary}", err=True)
