"""``certman scan SOURCE...``: audit a fleet of certificates, streaming.

Thin: expands nothing itself, renders nothing itself. The library scans in
worker processes and renders each result there (``render_result``); this
command writes the lines as they arrive, keeps the summary and sets the
exit status.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import sys
import time
from collections.abc import Callable

import click

from certman.cli._common import EXIT_FAILURE, EXIT_OK, handle_errors, is_tty
from certman.cli._endpoints import EndpointSettings, endpoint_options, endpoint_specs, split_targets
from certman.cli.inspect_cmd import build_options, parse_fail_on, shared_options
from certman.errors import ConfigError
from certman.inspector.aia import scan_fetching
from certman.inspector.endpoints import scan_endpoints
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
@click.argument("sources", nargs=-1)
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
@endpoint_options(many=True)
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
    endpoints: tuple[str, ...],
    endpoints_file: str | None,
    connect_to: str | None,
    starttls: str,
    timeout: float,
    concurrency: int,
    fetch_intermediates: bool,
) -> None:
    """Scan files, directories (recursively), globs, stdin or live TLS endpoints.

    SOURCE is a file, a directory, a glob ('certs/**/*.pem'), or '-' for
    stdin carrying concatenated PEM or JSON lines {"id": ..., "pem": ...}
    (what psql/sqlite3 can emit). Results stream; memory stays flat.

    Live endpoints: arguments like host:port, https://host, [::1]:8443 or
    smtp://mail.example.org (unless a file of that name exists), --endpoint
    SPEC, or --endpoints-file FILE|- (one per line). The chain is judged as
    the server sends it, with the host name checked (see docs/endpoints.md).

    \b
    Examples:
      certman scan /etc/ssl /srv/certs --fail-on high
      certman scan 'certs/**/*.pem' --format jsonl > report.jsonl
      certman scan /srv/certs --only distrusted-ca,expired --format csv
      certman scan /srv/certs --expiring-within 14 --min-severity medium
      certman scan /srv/certs --distrust 'O=Example CA' --distrust-file bad-cas.toml
      sqlite3 -json db.sqlite "select id, pem from certs" | jq -c '.[]' | certman scan -
      psql -At -c "select json_build_object('id', id, 'pem', pem) from certs" | certman scan -
      certman scan example.org:443 https://shop.example.com smtp://mail.example.com
      certman scan --endpoints-file customers.txt --only distrusted-ca --format jsonl
      certman scan --endpoint shop.example --connect-to 10.0.0.5:443 --fetch-intermediates

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
    settings = EndpointSettings.from_flags(
        connect_to=connect_to,
        starttls=starttls,
        timeout=timeout,
        concurrency=concurrency,
        fetch_intermediates=fetch_intermediates,
    )
    file_args, endpoint_args = split_targets(sources)
    if not file_args and not endpoint_args and not endpoints and endpoints_file is None:
        raise ConfigError(
            "nothing to scan: give SOURCE..., --endpoint or --endpoints-file",
            code="nothing-to-scan",
        )
    if endpoints_file == "-" and "-" in file_args:
        raise ConfigError(
            "stdin cannot be both a SOURCE (-) and --endpoints-file -", code="stdin-twice"
        )
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
    fetcher = settings.fetcher()
    file_results = scan_map(
        file_args,
        render,
        now=dt.datetime.now(dt.UTC),
        workers=workers,
        options=options,
        password=options.password,
        stdin=sys.stdin.buffer,
    )
    if fetcher is not None:  # AIA fetching waits on the network: threads, not processes
        file_results = map(
            render,
            scan_fetching(
                file_args,
                fetcher=fetcher,
                now=dt.datetime.now(dt.UTC),
                options=options,
                concurrency=min(settings.concurrency, 16),
                stdin=sys.stdin.buffer,
            ),
        )
    live = (
        scan_endpoints(
            endpoint_specs(endpoint_args, endpoints, endpoints_file),
            now=dt.datetime.now(dt.UTC),
            options=options,
            concurrency=settings.concurrency,
            connect=settings.connect,
            starttls=settings.starttls,
            connect_to=settings.connect_to,
            fetcher=fetcher,
        )
        if endpoint_args or endpoints or endpoints_file is not None
        else ()
    )
    results = itertools.chain(file_results if file_args else (), map(render, live))
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
