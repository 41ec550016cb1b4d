"""``certman renew``: renew what is due (run it from a timer twice a day)."""

from __future__ import annotations

import click

from certman.cli._common import EXIT_FAILURE, echo_json, handle_errors, is_tty, state
from certman.cli._manager import Progress, fmt_time, hook_options, make_manager
from certman.cli._store import store_option
from certman.manager import RunReport


def _summary(report: RunReport, verbose: int) -> None:
    renewed = report.by_status("renewed", "dry-run")
    word = "would be renewed (dry run)" if report.dry_run else "renewed"
    click.echo(
        f"{len(renewed)} {word}, {len(report.not_due)} not due, {len(report.failed)} failed"
        + "".join(
            f", {len(report.by_status(s))} {s}"
            for s in ("locked", "skipped", "deferred")
            if report.by_status(s)
        )
        + f" ({report.duration:.1f} s)"
    )
    for o in renewed:
        click.echo(f"  renewed   {o.name}: valid until {fmt_time(o.not_after)}")
    if verbose:
        for o in report.not_due:
            click.echo(f"  not due   {o.name}: {o.reason}")
    for o in report.by_status("locked", "skipped", "deferred"):
        click.echo(f"  {o.status:<9} {o.name}: {o.reason}")
    for o in report.failed:
        retry = f" (next try {fmt_time(o.next_renewal)})" if o.next_renewal else ""
        click.echo(f"  FAILED    {o.name}: {o.reason} [{o.error_code}]{retry}")
    for hook in report.hook_failures:
        click.echo(f"  warning: {hook.summary}", err=True)


@click.command("renew")
@store_option
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Renew even if not due.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Order real certificates from the CA but store nothing and run no hooks.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Certificates renewed in parallel.",
)
@click.option(
    "--lock-wait",
    type=click.FloatRange(0, 3600),
    default=None,
    metavar="SECONDS",
    help="Cluster mode: after the first pass, wait up to SECONDS for each certificate another "
    "worker held, so a worker that died mid-order is covered in this run.",
)
@hook_options
@click.option("--json", "as_json", is_flag=True, help="Print the run's report as JSON.")
@click.pass_context
@handle_errors
def renew_command(
    ctx: click.Context,
    names: tuple[str, ...],
    force: bool,
    dry_run: bool,
    concurrency: int,
    lock_wait: float | None,
    pre_hook: tuple[str, ...],
    deploy_hook: tuple[str, ...],
    post_hook: tuple[str, ...],
    as_json: bool,
) -> None:
    """Renew the certificates that are due (or only NAMEs; all with --force).

    Due means: the moment certman picked in the CA's ARI window has come,
    else a third of the lifetime is left (half under 10 days). Failures back
    off. Hooks given here run in addition to those stored at issue time.
    Exit status 1 if any renewal failed.

    \b
    certman renew
    certman renew example.org --force
    certman renew --dry-run
    certman renew --deploy-hook 'systemctl reload nginx'
    """
    with make_manager(ctx, concurrency=concurrency) as manager:
        progress = None
        if not as_json and is_tty():
            progress = Progress(0)
        report = manager.renew_due(
            list(names) or None,
            force=force,
            dry_run=dry_run,
            pre_hook=pre_hook,
            deploy_hook=deploy_hook,
            post_hook=post_hook,
            progress=progress,
            lock_wait=lock_wait,
        )
        if progress is not None:
            progress.end()
    if as_json:
        echo_json(report.to_dict())
    else:
        _summary(report, state(ctx).verbose)
    if not report.ok:
        ctx.exit(EXIT_FAILURE)
