"""``certman scan SOURCE...``: audit a fleet of certificates, streaming.

Thin: expands nothing itself, renders nothing itself. The library scans in
worker processes and renders each result there (``render_result``); this
command writes the lines as they arrive, keeps the summary and sets the
exit status.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
import time
from collections.abc import Callable

import click

from certman.cli._common import EXIT_FAILURE, EXIT_OK, handle_errors, is_tty
from certman.cli.inspect_cmd import build_options, parse_fail_on, shared_options
from certman.inspector.model import ScanResult, Severity
from certman.inspector.report import (
    CSV_HEADER,
    FORMATS,
    PROM_CERT_HEADER,
    Filter,
    Rendered,
    Summary,
    csv_line,
    render_result,
)
from certman.inspector.scan import scan_map


class _Progress:
    """A one-line counter on stderr, redrawn at most 5 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, count: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = count / max(now - self.start, 1e-6)
        click.echo(f"\rscanned {count} sources ({rate:,.0f}/s)", err=True, nl=final)


@click.command("scan")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS, case_sensitive=False),
    default="table",
    show_default=True,
    help="table: problems and a summary; jsonl: one JSON object per source; "
    "csv: one row per certificate; prometheus: expiry gauges and finding counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format jsonl.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (default: all cores).",
)
@click.option(
    "-a", "--all", "show_all", is_flag=True, help="Table: list sources without findings too."
)
@shared_options
@handle_errors
def scan_command(
    sources: tuple[str, ...],
    fmt: str,
    as_json: bool,
    workers: int | None,
    show_all: bool,
    trust_store: str | None,
    distrust: tuple[str, ...],
    distrust_file: str | None,
    expiring_within: int | None,
    only: str | None,
    min_severity: str,
    fail_on: str,
    password: str | None,
    max_size: int,
) -> None:
    """Scan files, directories (recursively), globs or stdin for certificate problems.

    SOURCE is a file, a directory, a glob ('certs/**/*.pem'), or '-' for
    stdin carrying concatenated PEM or JSON lines {"id": ..., "pem": ...}
    (what psql/sqlite3 can emit). Results stream; memory stays flat.

    \b
    Examples:
      certman scan /etc/ssl /srv/certs --fail-on high
      certman scan 'certs/**/*.pem' --format jsonl > report.jsonl
      certman scan /srv/certs --only distrusted-ca,expired --format csv
      certman scan /srv/certs --expiring-within 14 --min-severity medium
      certman scan /srv/certs --distrust 'O=Example CA' --distrust-file bad-cas.toml
      sqlite3 -json db.sqlite "select id, pem from certs" | jq -c '.[]' | certman scan -
      psql -At -c "select json_build_object('id', id, 'pem', pem) from certs" | certman scan -

    Exit status: 0 fine, 1 a shown finding at or above --fail-on (default
    high) or an unreadable source, 2 usage error.
    """
    fmt = "jsonl" if as_json else fmt.lower()
    options = build_options(
        trust_store=trust_store,
        distrust=distrust,
        distrust_file=distrust_file,
        expiring_within=expiring_within,
        only=only,
        password=password,
        max_size=max_size,
    )
    flt = Filter(
        only=options.rules,
        min_severity=Severity.parse(min_severity),
        expiring_within=expiring_within,
    )
    threshold = parse_fail_on(fail_on)
    render: Callable[[ScanResult], Rendered] = functools.partial(
        render_result, fmt=fmt, flt=flt, show_all=show_all
    )
    summary = Summary()
    progress = _Progress(is_tty())
    out = sys.stdout
    if fmt == "csv":
        out.write(csv_line(CSV_HEADER) + "\n")
    elif fmt == "prometheus":
        out.write(PROM_CERT_HEADER + "\n")
    results = scan_map(
        sources,
        render,
        now=dt.datetime.now(dt.UTC),
        workers=workers,
        options=options,
        password=options.password,
        stdin=sys.stdin.buffer,
    )
    printed = 0
    for item in results:
        summary.add(item)
        if item.text:
            out.write(item.text + "\n")
            printed += 1
        progress.update(summary.sources)
    progress.update(summary.sources, final=True)
    if fmt == "table":
        out.write(("\n" if printed else "") + summary.text() + "\n")
    elif fmt == "prometheus":
        out.write(summary.prometheus() + "\n")
    out.flush()
    raise SystemExit(EXIT_FAILURE if summary.failed(threshold) else EXIT_OK)
