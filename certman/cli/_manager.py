"""Building a :class:`~certman.manager.CertificateManager` from the global options.

Shared by ``account``, ``issue``, ``revoke``, ``list`` and ``renew``: every
one honours ``--home``/``--store`` (which store), ``--server``/``--staging``
(which CA) and ``--ca-bundle`` (trust for a private CA).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import click

from certman.challenges.server import parse_listen_address
from certman.cli._common import state
from certman.errors import ConfigError
from certman.manager import CertificateManager, Outcome, SolverSpec
from certman.store import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])


def open_cli_store(ctx: click.Context) -> Store:
    """The store chosen by ``--store`` / ``--home`` (or their defaults)."""
    cli = state(ctx)
    return open_store(cli.store_url, home=cli.home)


def make_manager(ctx: click.Context, **kwargs: Any) -> CertificateManager:
    """A manager for the CA and store the global options name.

    Hook failures are part of each command's own report; without ``-v``
    the hooks module's log line would only repeat them.
    """
    cli = state(ctx)
    if cli.verbose == 0:
        logging.getLogger("certman.hooks").setLevel(logging.ERROR)
    return CertificateManager(
        open_cli_store(ctx),
        server=cli.server,
        staging=cli.staging,
        ca_bundle=cli.ca_bundle,
        **kwargs,
    )


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` -> (host, port); "" = all addresses.

    The syntax is :func:`parse_listen_address`'s; issuing needs a real port
    (no bare HOST, no 0), and keeps its error code ``invalid-listen``.
    """
    try:
        host, port = parse_listen_address(value, default_port=None)
    except ConfigError:
        host, port = "", 0
    if port == 0:  # malformed, or 0 (a port picked at random is no use to a CA)
        raise ConfigError(
            f"--listen wants HOST:PORT, [IPv6]:PORT or PORT, got {value!r}", code="invalid-listen"
        )
    return host, port


def solver_spec(
    standalone: bool,
    listen: str | None,
    webroot: str | None,
    dns_hook: str | None,
    http01_store: bool = False,
) -> SolverSpec:
    """The one challenge method chosen on the command line (``ConfigError`` unless exactly one)."""
    chosen = [
        n
        for n, v in (
            ("--standalone", standalone),
            ("--webroot", webroot),
            ("--dns-hook", dns_hook),
            ("--http01-store", http01_store),
        )
        if v
    ]
    if listen and not standalone and not chosen:
        standalone, chosen = True, ["--standalone"]
    if len(chosen) != 1:
        raise ConfigError(
            "choose exactly one way to answer challenges: --standalone [--listen HOST:PORT], "
            "--webroot DIR, --dns-hook CMD or --http01-store",
            code="no-solver",
        )
    if standalone:
        host, port = parse_listen(listen) if listen else ("", 80)
        return SolverSpec.standalone(host, port)
    if listen:
        raise ConfigError("--listen goes with --standalone", code="invalid-listen")
    if http01_store:
        return SolverSpec.http01_store()
    if webroot:
        return SolverSpec.webroot(webroot)
    assert dns_hook is not None
    return SolverSpec.dns_hook(dns_hook)


def hook_options(func: F) -> F:
    """``--pre-hook``, ``--deploy-hook``, ``--post-hook`` (each repeatable)."""
    for opt, text in reversed(
        [
            ("--pre-hook", "Shell command run once before the first (re)issuance."),
            (
                "--deploy-hook",
                "Shell command run after each new certificate, with CERTMAN_NAME, "
                "CERTMAN_LIVE_DIR, CERTMAN_FULLCHAIN, CERTMAN_PRIVKEY, CERTMAN_DOMAINS set.",
            ),
            ("--post-hook", "Shell command run once at the end if anything was (re)issued."),
        ]
    ):
        func = click.option(opt, multiple=True, metavar="CMD", help=text + " Repeatable.")(func)
    return func


def fmt_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Progress:
    """A one-line progress display on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, *, stream: IO[str] | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # called from the worker threads

    def __call__(self, outcome: Outcome, done: int, total: int) -> None:
        with self._lock:
            self._draw(outcome, done, total)

    def _draw(self, outcome: Outcome, done: int, total: int) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        line = f"\r[{done}/{total}] {summary}  {outcome.name[:40]}"
        self.stream.write(line.ljust(100)[:100])
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\r" + " " * 100 + "\r")
        self.stream.flush()
