"""``certman metrics``: Prometheus metrics of the managed certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from certman.cli._common import echo_json, handle_errors, state
from certman.cli._store import store_option
from certman.errors import ConfigError
from certman.metrics import collect, render, write_textfile
from certman.store import Store, open_store


def _open_store(ctx: click.Context) -> Store:
    cli = state(ctx)
    return open_store(cli.store_url, home=cli.home)


@click.command("metrics")
@store_option
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metrics to this file atomically (for node_exporter's textfile "
    "collector; the name must end in .prom) instead of printing them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead.")
@click.pass_context
@handle_errors
def metrics_command(ctx: click.Context, textfile: Path | None, as_json: bool) -> None:
    """Export certificate metrics in the Prometheus text format.

    Per certificate: expiry, whether renewal is due, the next renewal time
    and its source (ari, lifetime, backoff...), the last success and the
    consecutive failures. Reads the store only; no network.

    \b
    Print them:             certman metrics
    For node_exporter:      certman metrics --textfile /var/lib/node_exporter/certman.prom
    """
    if textfile is not None and as_json:
        raise ConfigError("--textfile and --json do not go together", code="config-usage")
    if textfile is not None and not textfile.name.endswith(".prom"):
        raise ConfigError(
            f"{textfile}: node_exporter's textfile collector reads only *.prom files",
            code="config-textfile-name",
        )
    now = datetime.now(UTC)
    figures = collect(_open_store(ctx), now=now)
    if as_json:
        echo_json(
            [
                {
                    "name": m.name,
                    "not_after": m.not_after,
                    "renewal_due": m.renewal_due,
                    "next_renewal": m.next_renewal,
                    "renewal_source": m.renewal_source,
                    "last_success": m.last_success,
                    "consecutive_failures": m.consecutive_failures,
                    "domains": list(m.domains),
                }
                for m in figures
            ]
        )
        return
    text = render(figures, now=now)
    if textfile is None:
        click.echo(text, nl=False)
    else:
        write_textfile(textfile, text)
