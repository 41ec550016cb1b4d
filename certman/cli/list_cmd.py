"""``certman list``: the stored certificates, their expiry and next renewal."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from certman.cli._common import echo_json, handle_errors
from certman.cli._manager import fmt_time, open_cli_store
from certman.cli._store import store_option
from certman.manager import CertificateStatus, list_status


def _table(rows: list[CertificateStatus]) -> str:
    headers = ["NAME", "NAMES", "ISSUER", "EXPIRES", "DAYS", "KEY", "PROFILE", "NEXT RENEWAL"]
    lines: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        if row.error:
            lines.append([row.name, "-", "-", "-", "-", "-", "-", "unreadable"])
            notes.append(f"{row.name}: {row.error}")
            continue
        names = ",".join(row.names)
        when = fmt_time(row.next_renewal).removesuffix(" UTC")
        source = f"{when} ({row.renewal_source})" + (" DUE" if row.renewal_due else "")
        lines.append(
            [
                row.name,
                names if len(names) <= 40 else names[:37] + "...",
                (row.issuer or "-")[:30],
                fmt_time(row.not_after).removesuffix(" UTC"),
                "-" if row.days_left is None else f"{row.days_left:.0f}",
                row.key_type or "-",
                row.profile or "-",
                source,
            ]
        )
        if row.last_error:
            notes.append(
                f"{row.name}: last error ({row.consecutive_failures} in a row): {row.last_error}"
            )
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    return "\n".join(out + notes)


@click.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "prometheus"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.pass_context
@handle_errors
def list_command(ctx: click.Context, as_json: bool, fmt: str) -> None:
    """List stored certificates: names, issuer, expiry, key type, profile,
    the next renewal time and where it comes from (ari, lifetime, backoff...),
    and the last error. Reads the store only; no network.

    \b
    certman list
    certman list --json | jq '.[] | select(.days_left < 20) | .name'
    certman list --format prometheus > /var/lib/node_exporter/certman.prom
    """
    store = open_cli_store(ctx)
    now = datetime.now(UTC)
    if fmt == "prometheus" and not as_json:
        from certman.metrics import collect, render

        click.echo(render(collect(store, now=now), now=now), nl=False)
        return
    rows = list_status(store, now=now)
    if as_json or fmt == "json":
        echo_json([r.to_dict() for r in rows])
    elif not rows:
        click.echo("No certificates yet. Get one with: certman issue -d NAME --standalone")
    else:
        click.echo(_table(rows))
