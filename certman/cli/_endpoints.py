"""Live-endpoint options shared by ``certman inspect`` and ``certman scan``.

Which arguments are endpoints (the one rule, documented in docs/endpoints.md):

1. an argument naming something that exists on disk is a file (or directory);
2. otherwise ``scheme://...`` (https, smtp, imap, ...), ``[ipv6]:port`` and
   ``name:port`` are endpoints;
3. everything else is a path or glob, as before -- so a bare ``example.org``
   is *not* contacted: write ``example.org:443``, ``https://example.org`` or
   ``--endpoint example.org``.

``--endpoints-file FILE`` (``-`` for stdin) reads one endpoint per line
(``SPEC [CONNECT_TO]``, ``#`` comments), lazily.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certman import _atomic
from certman.errors import ConfigError, InspectorError
from certman.inspector.aia import AiaFetcher, fetch_missing
from certman.inspector.endpoints import (
    DEFAULT_CONCURRENCY,
    STARTTLS_PROTOCOLS,
    ConnectOptions,
    Endpoint,
    fetch_chains,
    iter_endpoint_lines,
    looks_like_endpoint,
    parse_connect_to,
    parse_endpoint,
)
from certman.inspector.inspection import InspectOptions, inspect, trust_store_for
from certman.inspector.load import Bundle, load_ders, load_file
from certman.inspector.model import Finding, Severity
from certman.inspector.repair import RepairedChain, describe, matching_key, repair_chain

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = 10.0


def endpoint_options(*, many: bool) -> Callable[[F], F]:
    """The endpoint flags; ``many`` adds --endpoints-file (scan)."""

    def apply(func: F) -> F:
        decorators = [
            click.option(
                "--endpoint",
                "endpoints",
                multiple=True,
                metavar="SPEC",
                help="A live TLS endpoint: host, host:port, https://host[:port], [ipv6]:port, "
                "smtp://host ... Repeatable. (Arguments like host:port and https://host are "
                "recognised too, unless a file of that name exists.)",
            ),
            click.option(
                "--connect-to",
                metavar="HOST:PORT",
                help="Connect here instead of resolving each endpoint's name; SNI and the "
                "host-name check keep the name (ask one load balancer for many names).",
            ),
            click.option(
                "--starttls",
                type=click.Choice(["auto", "none", *STARTTLS_PROTOCOLS], case_sensitive=False),
                default="auto",
                show_default=True,
                help="Plaintext protocol to upgrade first. auto: SMTP on 25/587, IMAP on 143, "
                "POP3 on 110, FTP on 21.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULT_TIMEOUT,
                show_default=True,
                metavar="SECONDS",
                help="Limit for connecting, and again for the STARTTLS + TLS handshake.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(1, 4096),
                default=DEFAULT_CONCURRENCY,
                show_default=True,
                help="Endpoints contacted at once.",
            ),
            click.option(
                "--fetch-intermediates",
                is_flag=True,
                help="When an issuer is missing, fetch it from the certificate's AIA "
                "caIssuers URL (network access to the CA's server; off by default).",
            ),
        ]
        if many:
            decorators.insert(
                1,
                click.option(
                    "--endpoints-file",
                    type=click.Path(dir_okay=False, exists=True, allow_dash=True),
                    metavar="FILE",
                    help="Read endpoints from FILE ('-': stdin), one per line: "
                    "SPEC [CONNECT_TO]; '#' starts a comment.",
                ),
            )
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


@dataclass(frozen=True)
class EndpointSettings:
    """The endpoint flags, checked."""

    connect: ConnectOptions
    starttls: str
    connect_to: str | None
    concurrency: int
    fetch_intermediates: bool

    @classmethod
    def from_flags(
        cls,
        *,
        connect_to: str | None,
        starttls: str,
        timeout: float,
        concurrency: int,
        fetch_intermediates: bool,
    ) -> EndpointSettings:
        if connect_to is not None:
            try:
                parse_connect_to(connect_to, default_port=443)
            except InspectorError as exc:
                raise ConfigError(exc.message, code=exc.code) from exc
        return cls(
            connect=ConnectOptions(connect_timeout=timeout, handshake_timeout=timeout),
            starttls=starttls.lower(),
            connect_to=connect_to,
            concurrency=concurrency,
            fetch_intermediates=fetch_intermediates,
        )

    def fetcher(self, ca_file: str | None = None) -> AiaFetcher | None:
        """An AIA fetcher when the user opted in, else None (certman never fetches)."""
        if not self.fetch_intermediates:
            return None
        return AiaFetcher(timeout=self.connect.handshake_timeout, cafile=ca_file)

    def parse(self, spec: str) -> Endpoint:
        """One endpoint from a spec, with these settings (ConfigError, exit 2, when bad)."""
        try:
            return parse_endpoint(spec, starttls=self.starttls, connect_to=self.connect_to)
        except InspectorError as exc:
            raise ConfigError(exc.message, code=exc.code) from exc


def is_endpoint_arg(arg: str) -> bool:
    """Whether a positional argument is an endpoint (files that exist always win)."""
    return arg != "-" and not os.path.lexists(arg) and looks_like_endpoint(arg)


def split_targets(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """(files/dirs/globs/-, endpoint specs) from the positional arguments."""
    files: list[str] = []
    endpoints: list[str] = []
    for arg in args:
        (endpoints if is_endpoint_arg(arg) else files).append(arg)
    return files, endpoints


def endpoint_specs(
    positional: Iterable[str], flags: Iterable[str], endpoints_file: str | None
) -> Iterator[str]:
    """Every endpoint spec, lazily: arguments, --endpoint flags, then the file's lines."""
    yield from positional
    yield from flags
    if endpoints_file is None:
        return
    if endpoints_file == "-":
        yield from iter_endpoint_lines(sys.stdin)
        return
    try:
        with open(endpoints_file, encoding="utf-8-sig", errors="replace") as fh:
            yield from iter_endpoint_lines(fh)
    except OSError as exc:
        raise ConfigError(
            f"cannot read --endpoints-file {endpoints_file}: {exc.strerror}",
            code="endpoints-file-unreadable",
        ) from exc


def repair_bundle(
    bundle: Bundle,
    *,
    now: dt.datetime,
    trust_store: str | None,
    fetcher: AiaFetcher | None,
    keys: Sequence[PrivateKeyTypes] = (),
) -> tuple[RepairedChain, tuple[str, ...]]:
    """Repair a bundle (fetching missing issuers when ``fetcher``); also AIA's complaints."""
    anchors = trust_store_for(trust_store).certificates()
    certs = list(bundle.certificates)
    fetched: tuple[x509.Certificate, ...] = ()
    errors: tuple[str, ...] = ()
    if fetcher is not None:
        outcome = fetch_missing(certs, fetcher, now=now, anchors=anchors)
        fetched, errors = outcome.fetched, outcome.errors
    key = matching_key(certs, [*bundle.keys, *keys])
    return repair_chain(certs, now=now, fetched=fetched, anchors=anchors, key=key), errors


def fix_failure_message(fixed: RepairedChain, errors: tuple[str, ...], fetched: bool) -> str:
    """Why --fix cannot write a deployable chain."""
    top = fixed.certificates[-1]
    msg = f"cannot fix: the issuer of {describe(top)!r} ({fixed.missing_issuer}) is missing"
    if errors:
        msg += "; " + "; ".join(errors)
    elif not fetched:
        msg += "; add --fetch-intermediates to fetch it from the certificate's AIA URL"
    return msg


def write_output(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (0644: certificates are public); '-' is stdout."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    _atomic.replace_file(path, data, 0o644, tmp_prefix=".certman-fix-")


Loaded = tuple[str, Bundle | InspectorError, str | None]


def load_targets(
    names: Iterable[str],
    flags: Iterable[str],
    settings: EndpointSettings,
    *,
    password: bytes | None,
    max_size: int,
) -> list[Loaded]:
    """``(name, bundle or error, host)`` per target, in order; endpoints fetched at once.

    ``host`` is the endpoint's name (for ``hostname-mismatch``), None for files.
    """
    order: list[tuple[str, Endpoint | None]] = []
    for name in names:
        order.append((name, settings.parse(name) if is_endpoint_arg(name) else None))
    for spec in flags:
        order.append((spec, settings.parse(spec)))
    wanted = list(dict.fromkeys(ep for _, ep in order if ep is not None))
    got = {
        r.endpoint: r
        for r in fetch_chains(wanted, concurrency=settings.concurrency, options=settings.connect)
    }
    out: list[Loaded] = []
    for name, endpoint in order:
        if endpoint is None:
            try:
                out.append((name, load_file(name, password=password, max_size=max_size), None))
            except InspectorError as exc:
                out.append((name, exc, None))
            continue
        result = got[endpoint]
        if result.error is not None:
            out.append((endpoint.label, result.error.to_exception(), endpoint.host))
            continue
        try:
            bundle = load_ders(result.chain, source=endpoint.label)
        except InspectorError as exc:
            out.append((endpoint.label, exc, endpoint.host))
            continue
        out.append((endpoint.label, bundle, endpoint.host))
    return out


@dataclass(frozen=True)
class FixOutcome:
    """What ``--fix`` did: the repaired chain, whether it was written, what remains wrong."""

    repaired: RepairedChain | None
    written: bool
    error: str | None
    remaining: tuple[Finding, ...]

    def to_dict(self, output: str) -> dict[str, Any]:
        return {
            "output": output,
            "written": self.written,
            "error": self.error,
            "complete": self.repaired.complete if self.repaired else False,
            "certificates": len(self.repaired.certificates) if self.repaired else 0,
            "changes": list(self.repaired.changes) if self.repaired else [],
            "remaining": [
                {"rule": f.rule, "severity": str(f.severity), "message": f.message, "cert": f.cert}
                for f in self.remaining
            ],
        }


def fix_bundle(
    bundle: Bundle,
    output: str,
    *,
    now: dt.datetime,
    host: str | None,
    options: InspectOptions,
    fetcher: AiaFetcher | None,
    threshold: Severity | None,
    keys: Sequence[PrivateKeyTypes] = (),
) -> FixOutcome:
    """Repair ``bundle``, write it to ``output`` when complete, and re-inspect the result.

    Nothing is written when an issuer is still missing. ``remaining`` are
    the fixed chain's findings at or above ``threshold``.
    """
    try:
        repaired, errors = repair_bundle(
            bundle, now=now, trust_store=options.trust_store, fetcher=fetcher, keys=keys
        )
    except InspectorError as exc:
        return FixOutcome(None, False, exc.message, ())
    if not repaired.complete:
        return FixOutcome(
            repaired, False, fix_failure_message(repaired, errors, fetcher is not None), ()
        )
    try:
        write_output(output, repaired.pem())
    except OSError as exc:
        return FixOutcome(repaired, False, f"cannot write {output}: {exc.strerror or exc}", ())
    fixed = inspect(
        replace(bundle, certificates=repaired.certificates, keys=()),
        now=now,
        host=host,
        options=options,
    )
    remaining = tuple(
        f for f in fixed.findings if threshold is not None and f.severity >= threshold
    )
    return FixOutcome(repaired, True, None, remaining)


__all__ = [
    "EndpointSettings",
    "FixOutcome",
    "endpoint_options",
    "endpoint_specs",
    "fix_bundle",
    "fix_failure_message",
    "is_endpoint_arg",
    "load_targets",
    "repair_bundle",
    "split_targets",
    "write_output",
]
