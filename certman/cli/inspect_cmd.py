"""``certman inspect FILE...``: a readable report per certificate bundle.

Also home of the options ``inspect`` and ``scan`` share (trust store,
distrust list, thresholds, filters), so both commands parse them the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from certman.cli._common import EXIT_FAILURE, EXIT_OK, echo_json, handle_errors
from certman.errors import InspectorError
from certman.inspector.distrust import EVENTS, DistrustEvent, load_distrust_file, user_event
from certman.inspector.inspection import InspectOptions, inspect
from certman.inspector.load import DEFAULT_MAX_SIZE, load_file, load_private_key, read_file
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
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
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
@shared_options
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
) -> None:
    """Inspect certificate bundles: certificates, chain, findings.

    Reads PEM (one or many certificates, keys), DER, PKCS#7 and PKCS#12.

    \b
    Examples:
      certman inspect /etc/ssl/example.org/fullchain.pem
      certman inspect fullchain.pem --key privkey.pem --host example.org
      certman inspect site.p12 --password secret --json
      certman inspect cert.pem --trust-store my-private-ca.pem

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
    results: list[ScanResult] = []
    for name in files:
        try:
            bundle = load_file(name, password=options.password, max_size=max_size)
            report = inspect(bundle, now=when, host=host, keys=keys, options=options)
            results.append(ScanResult(source=name, report=report))
        except InspectorError as exc:
            results.append(ScanResult(source=name, error=exc.message, error_code=exc.code))
    if as_json:
        echo_json([result_dict(r, flt, chain=True) for r in results])
    else:
        click.echo("\n".join(render_text(r, flt) for r in results), nl=False)
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
