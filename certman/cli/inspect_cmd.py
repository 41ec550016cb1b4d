"""``certman inspect FILE...``: a readable report per certificate bundle.

Also home of the options ``inspect`` and ``scan`` share (trust store,
distrust list, thresholds, filters), so both commands parse them the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from certman.cli._common import EXIT_FAILURE, EXIT_OK, echo_json, handle_errors
from certman.cli._endpoints import (
    EndpointSettings,
    FixOutcome,
    endpoint_options,
    fix_bundle,
    load_targets,
)
from certman.errors import ConfigError, InspectorError
from certman.inspector.aia import inspect_with_fetching
from certman.inspector.distrust import EVENTS, DistrustEvent, load_distrust_file, user_event
from certman.inspector.inspection import InspectOptions, inspect
from certman.inspector.load import DEFAULT_MAX_SIZE, load_private_key, read_file
from certman.inspector.model import ScanResult, Severity
from certman.inspector.report import Filter, only_rules, render_text, result_dict

F = TypeVar("F", bound=Callable[..., Any])

SEVERITIES = [str(s) for s in Severity]


def shared_options(func: F) -> F:
    """The options ``inspect`` and ``scan`` have in common."""
    decorators = [
        click.option(
            "--trust-store",
            type=click.Path(dir_okay=False, exists=True),
            help="PEM file of trusted roots (default: certifi's Mozilla bundle).",
        ),
        click.option(
            "--distrust",
            "distrust",
            multiple=True,
            metavar="PATTERN",
            help="Also distrust an issuer: 'O=Example CA', 'CN=X,O=Y' or 'sha256:HEX'. Repeatable.",
        ),
        click.option(
            "--distrust-file",
            type=click.Path(dir_okay=False, exists=True),
            help="TOML file of [[distrust]] entries (see docs/inspector.md).",
        ),
        click.option(
            "--expiring-within",
            type=click.IntRange(min=0),
            metavar="DAYS",
            help="expiring-soon threshold in days (default 30).",
        ),
        click.option("--only", metavar="RULE,...", help="Run and show only these rule ids."),
        click.option(
            "--min-severity",
            type=click.Choice(SEVERITIES, case_sensitive=False),
            default="info",
            show_default=True,
            help="Show only findings at or above this level.",
        ),
        click.option(
            "--fail-on",
            type=click.Choice([*SEVERITIES, "never"], case_sensitive=False),
            default="high",
            show_default=True,
            help="Exit 1 when a shown finding is at or above this level (errors always do).",
        ),
        click.option(
            "--password",
            envvar="CERTMAN_PKCS12_PASSWORD",
            help="Password of PKCS#12 files / encrypted keys. Env: CERTMAN_PKCS12_PASSWORD.",
        ),
        click.option(
            "--max-size",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_SIZE,
            show_default=True,
            help="Refuse files larger than this many bytes.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def build_options(
    *,
    trust_store: str | None,
    distrust: tuple[str, ...],
    distrust_file: str | None,
    expiring_within: int | None,
    only: str | None,
    password: str | None,
    max_size: int,
) -> InspectOptions:
    """InspectOptions from the shared flags (ConfigError, exit 2, when one is bad)."""
    events: list[DistrustEvent] = list(EVENTS)
    events += [user_event(p) for p in distrust]
    if distrust_file:
        events += load_distrust_file(distrust_file)
    return InspectOptions(
        expiring_days=30 if expiring_within is None else expiring_within,
        rules=only_rules(only),
        trust_store=trust_store,
        distrust=tuple(events),
        max_size=max_size,
        password=password.encode() if password is not None else None,
    )


def parse_fail_on(text: str) -> Severity | None:
    """``--fail-on`` as a Severity (None for ``never``)."""
    return None if text.lower() == "never" else Severity.parse(text)


@click.command("inspect")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--host", help="Check that the certificate covers this host name (hostname-mismatch)."
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Private key file to check against the certificate (key-mismatch).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, one object per file).")
@click.option(
    "--now",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Judge as of this UTC date instead of now (e.g. for 'will this be distrusted').",
)
@click.option(
    "--fix",
    is_flag=True,
    help="Write the chain put right (leaf, then intermediates in order, no root) to -o FILE.",
)
@click.option(
    "-o", "--output", metavar="FILE", help="Where --fix writes the PEM chain ('-': stdout)."
)
@shared_options
@endpoint_options(many=False)
@handle_errors
def inspect_command(
    files: tuple[str, ...],
    host: str | None,
    key_file: str | None,
    as_json: bool,
    now: dt.datetime | None,
    trust_store: str | None,
    distrust: tuple[str, ...],
    distrust_file: str | None,
    expiring_within: int | None,
    only: str | None,
    min_severity: str,
    fail_on: str,
    password: str | None,
    max_size: int,
    fix: bool,
    output: str | None,
    endpoints: tuple[str, ...],
    connect_to: str | None,
    starttls: str,
    timeout: float,
    concurrency: int,
    fetch_intermediates: bool,
) -> None:
    """Inspect certificate bundles or live TLS endpoints: certificates, chain, findings.

    Reads PEM (one or many certificates, keys), DER, PKCS#7 and PKCS#12.
    An argument like host:port, https://host[:port], [::1]:8443 or
    smtp://host (when no file of that name exists), or --endpoint SPEC, is
    a live endpoint: its chain is judged exactly as sent, and its name
    checked (hostname-mismatch). --fix -o FILE writes the chain put right;
    --fetch-intermediates lets it fetch a missing intermediate (AIA).

    \b
    Examples:
      certman inspect /etc/ssl/example.org/fullchain.pem
      certman inspect fullchain.pem --key privkey.pem --host example.org
      certman inspect site.p12 --password secret --json
      certman inspect cert.pem --trust-store my-private-ca.pem
      certman inspect example.org:443
      certman inspect smtp://mail.example.org --json
      certman inspect --endpoint shop.example --connect-to 10.0.0.5:443
      certman inspect broken.pem --fix -o fixed.pem --fetch-intermediates

    With --fix the exit status is about the fixed chain: 0 when it was
    written and has no finding at or above --fail-on.

    Exit status: 0 fine, 1 a finding at or above --fail-on or an unreadable
    file, 2 usage error.
    """
    options = build_options(
        trust_store=trust_store,
        distrust=distrust,
        distrust_file=distrust_file,
        expiring_within=expiring_within,
        only=only,
        password=password,
        max_size=max_size,
    )
    flt = Filter(only=options.rules, min_severity=Severity.parse(min_severity))
    threshold = parse_fail_on(fail_on)
    when = now.replace(tzinfo=dt.UTC) if now is not None else dt.datetime.now(dt.UTC)
    keys = []
    if key_file is not None:
        keys.append(
            load_private_key(
                read_file(Path(key_file), max_size=max_size),
                password=options.password,
            )
        )
    settings = EndpointSettings.from_flags(
        connect_to=connect_to,
        starttls=starttls,
        timeout=timeout,
        concurrency=concurrency,
        fetch_intermediates=fetch_intermediates,
    )
    if not files and not endpoints:
        raise ConfigError("nothing to inspect: give FILE... or --endpoint", code="no-input")
    if output is not None and not fix:
        raise ConfigError("-o/--output is for --fix", code="bad-fix")
    if fix and (output is None or len(files) + len(endpoints) != 1):
        raise ConfigError("--fix needs exactly one FILE or endpoint, and -o FILE", code="bad-fix")
    fetcher = settings.fetcher()
    results: list[ScanResult] = []
    fixes: list[FixOutcome] = []
    targets = load_targets(files, endpoints, settings, password=options.password, max_size=max_size)
    for name, loaded, target_host in targets:
        try:
            if isinstance(loaded, InspectorError):
                raise loaded
            check_host = host or target_host
            if fetcher is not None:
                report = inspect_with_fetching(
                    loaded, fetcher=fetcher, now=when, host=check_host, keys=keys, options=options
                )
            else:
                report = inspect(loaded, now=when, host=check_host, keys=keys, options=options)
            results.append(ScanResult(source=name, report=report))
            if fix and output is not None:
                fixes.append(
                    fix_bundle(
                        loaded,
                        output,
                        now=when,
                        host=check_host,
                        options=options,
                        fetcher=fetcher,
                        threshold=threshold,
                        keys=keys,
                    )
                )
        except InspectorError as exc:
            results.append(ScanResult(source=name, error=exc.message, error_code=exc.code))
    if as_json:
        objs = [result_dict(r, flt, chain=True) for r in results]
        for obj, outcome in zip(objs, fixes, strict=False):
            obj["fix"] = outcome.to_dict(output or "")
        if output != "-":
            echo_json(objs)
        else:
            click.echo(json.dumps(objs, sort_keys=True, default=str), err=True)
    elif output != "-":
        click.echo("\n".join(render_text(r, flt) for r in results), nl=False)
    for outcome in fixes:
        if outcome.error is not None:
            click.echo(f"certman: error: {outcome.error} [fix-incomplete]", err=True)
            continue
        assert outcome.repaired is not None
        what = "; ".join(outcome.repaired.changes) or "no change needed"
        click.echo(
            f"certman: wrote {len(outcome.repaired.certificates)} certificates to {output}: {what}",
            err=True,
        )
        for f in outcome.remaining:
            click.echo(f"certman: still {f.severity}: {f.rule}: {f.message}", err=True)
    if fixes:
        ok = all(o.written and not o.remaining for o in fixes) and all(r.ok for r in results)
        raise SystemExit(EXIT_OK if ok else EXIT_FAILURE)
    failed = any(not r.ok for r in results) or (
        threshold is not None
        and any(
            f.severity >= threshold
            for r in results
            if r.report is not None
            for f in flt.findings(r.report.findings)
        )
    )
    raise SystemExit(EXIT_FAILURE if failed else EXIT_OK)
