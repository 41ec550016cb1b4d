"""``certman serve-http01``: answer HTTP-01 challenges from the shared store, on any node."""

from __future__ import annotations

import json
import logging
import signal
import threading
from types import FrameType

import click

from certman.challenges.http01 import StoreTokenStore, TokenStore
from certman.challenges.server import HTTP01Server, parse_listen_address
from certman.cli._common import handle_errors, state
from certman.cli._store import store_option
from certman.errors import CertmanError
from certman.store import open_store

log = logging.getLogger(__name__)


class _CountingTokens:
    """Counts lookups and hits, for the summary printed on exit.

    A store that cannot be read (the database is down) answers "not found"
    (the CA's validation fails, it will retry later) with one warning line,
    rather than a traceback per request.
    """

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.lookups = 0
        self.served = 0
        self.errors = 0
        self._lock = threading.Lock()

    def put(self, token: str, key_authorization: str) -> None:
        self.inner.put(token, key_authorization)

    def delete(self, token: str) -> None:
        self.inner.delete(token)

    def get(self, token: str) -> str | None:
        try:
            value = self.inner.get(token)
        except CertmanError as exc:
            with self._lock:
                self.errors += 1
            log.warning("cannot read token %s: %s [%s]", token, exc, exc.code)
            return None
        with self._lock:
            self.lookups += 1
            if value is not None:
                self.served += 1
        return value


@click.command("serve-http01")
@store_option
@click.option(
    "--listen",
    default=":80",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to answer on: HOST:PORT, [IPv6]:PORT or :PORT (all addresses).",
)
@click.option(
    "--cache-ttl",
    type=click.FloatRange(0, 2),
    default=1.0,
    show_default=True,
    help="Seconds a found token may be answered from memory (PostgreSQL store; "
    "entries are also dropped the moment the store announces a change; 0 = no cache).",
)
@click.option(
    "--connection-timeout",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="Seconds a client gets to send its whole request.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 10000),
    default=64,
    show_default=True,
    help="Connections still sending their request; when full, the oldest is closed with 503.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the listening address, and a summary on exit, as JSON lines.",
)
@click.pass_context
@handle_errors
def serve_command(
    ctx: click.Context,
    listen: str,
    cache_ttl: float,
    connection_timeout: float,
    max_connections: int,
    as_json: bool,
) -> None:
    """Answer HTTP-01 challenges with the tokens any certman node publishes in the store.

    Run it on every web node (or route /.well-known/acme-challenge/ to it from
    your load balancer): the CA's validation request may land on any node,
    not the one that placed the order. Runs until SIGTERM or Ctrl-C.

    \b
    certman serve-http01 --store postgresql://certman@db1/certman --listen :80
    certman serve-http01 --store postgresql://... --listen 127.0.0.1:8402   # behind nginx

    With a PostgreSQL store, found tokens are cached for at most --cache-ttl
    seconds and dropped as soon as the store NOTIFYs a change, so a withdrawn
    token is not served from memory; unknown tokens are never cached.
    """
    cli = state(ctx)
    url = cli.store_url
    host, port = parse_listen_address(listen)
    store = open_store(url, home=cli.home)
    cache = None
    tokens: TokenStore
    from_store = StoreTokenStore(store)
    if cache_ttl > 0 and type(store).__name__ == "PostgresStore":
        from certman.store.postgres import CachedTokenStore, PostgresStore

        assert isinstance(store, PostgresStore)
        store.check_schema()
        cache = CachedTokenStore(store, ttl=cache_ttl)
        cache.start()
        tokens = cache
    else:
        tokens = from_store
    counting = _CountingTokens(tokens)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = HTTP01Server(
        counting,
        host,
        port,
        connection_timeout=connection_timeout,
        max_connections=max_connections,
    )
    try:
        with server:
            bound_host, bound_port = server.address
            if as_json:
                click.echo(
                    json.dumps({"listening": f"{bound_host}:{bound_port}", "store": repr(store)})
                )
            else:
                click.echo(f"certman: answering HTTP-01 on {bound_host}:{bound_port}")
            while not stop.wait(0.5):
                pass
    finally:
        if cache is not None:
            cache.stop()
    summary = {"lookups": counting.lookups, "served": counting.served, "errors": counting.errors}
    if cache is not None:
        summary["cache_hits"] = cache.hits
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"certman: stopped; {counting.served} of {counting.lookups} lookups answered")
