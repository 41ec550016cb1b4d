"""Every solver against a real CA: Pebble validates through our responders and hooks,
and the certificates land in a FileStore.

Pebble connects to 127.0.0.1:<http_port> for HTTP-01 (challtestsrv resolves every
name there) and asks challtestsrv's DNS server for DNS-01 TXT records.
Authorization reuse is off so that every order really exercises the solver.
"""

from __future__ import annotations

import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from cryptography import x509

from certman.challenges import (
    ChallengeMiddleware,
    DnsHookSolver,
    StandaloneSolver,
    StoreTokenStore,
    TokenStoreSolver,
    WebrootSolver,
)
from certman.store import CertificateFiles, CertificateMeta, FileStore
from tests.conftest import running_pebble, serve_directory, serving

if TYPE_CHECKING:
    from certman.client import AcmeClient
    from certman.client.order import IssuedCertificate
    from certman.testing import LocalPebble

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(authz_reuse=0)


@pytest.fixture(scope="module")
def client(pebble: LocalPebble) -> Iterator[AcmeClient]:
    from certman.client import AcmeClient, fetch_directory
    from certman.keys import generate_private_key

    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    with AcmeClient(directory, generate_private_key(), ca_bundle=pebble.ca_bundle) as c:
        c.register(agree_tos=True)
        yield c


def dns_names(cert: IssuedCertificate) -> list[str]:
    leaf = x509.load_pem_x509_certificate(cert.cert_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def save(store: FileStore, name: str, cert: IssuedCertificate) -> None:
    assert cert.private_key_pem is not None
    files = CertificateFiles.from_parts(
        cert.cert_pem.encode(), cert.chain_pem.encode(), cert.private_key_pem
    )
    meta = CertificateMeta(
        name=name, names=cert.names, key_type=cert.key_type, not_after=cert.not_after
    )
    store.save_certificate(name, files, meta)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_standalone_solver(client: AcmeClient, pebble: LocalPebble, tmp_path: Path) -> None:
    solver = StandaloneSolver("127.0.0.1", pebble.http_port)
    cert = client.issue(["standalone.example", "www.standalone.example"], solver)
    assert cert.challenges_solved == 2
    assert dns_names(cert) == ["standalone.example", "www.standalone.example"]
    assert not solver.server.running and port_is_free(pebble.http_port)

    store = FileStore(tmp_path / "home")
    save(store, "standalone.example", cert)
    live = store.load_live("standalone.example")
    assert live.files.fullchain_pem == cert.fullchain_pem.encode()
    assert stat.S_IMODE(store.live_paths("standalone.example")["privkey"].stat().st_mode) == 0o600


def test_standalone_solver_shared_by_concurrent_orders(
    client: AcmeClient, pebble: LocalPebble
) -> None:
    from certman.client import AcmeClient
    from certman.client import fetch_directory as fetch
    from certman.keys import generate_private_key

    directory = fetch(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(i: int, solver: StandaloneSolver) -> None:
        try:
            key = generate_private_key()
            with AcmeClient(directory, key, ca_bundle=pebble.ca_bundle) as c:
                c.register(agree_tos=True)
                results[i] = dns_names(c.issue([f"c{i}.example", f"d{i}.example"], solver))
        except BaseException as exc:
            errors.append(exc)

    with StandaloneSolver("127.0.0.1", pebble.http_port) as solver:
        threads = [threading.Thread(target=worker, args=(i, solver)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert results == {i: [f"c{i}.example", f"d{i}.example"] for i in range(4)}


class QuietWSGI(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_webroot_solver_behind_a_real_web_server(
    client: AcmeClient, pebble: LocalPebble, tmp_path: Path
) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    with serve_directory(webroot, pebble.http_port):
        cert = client.issue(["webroot.example"], WebrootSolver(webroot))
    assert dns_names(cert) == ["webroot.example"]
    assert list(webroot.iterdir()) == []  # tokens and the dirs it made are gone


def test_wsgi_middleware_with_tokens_in_the_file_store(
    client: AcmeClient, pebble: LocalPebble, tmp_path: Path
) -> None:
    """The site answers through the middleware; the issuer publishes via the FileStore."""
    hits: list[str] = []

    def site(environ, start_response):  # type: ignore[no-untyped-def]
        hits.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the site"]

    store = FileStore(tmp_path / "home")
    site_tokens = StoreTokenStore(FileStore(tmp_path / "home"))  # as another process would
    app = ChallengeMiddleware(site, site_tokens)
    server = make_server("127.0.0.1", pebble.http_port, app, handler_class=QuietWSGI)
    with serving(server):
        solver = TokenStoreSolver(StoreTokenStore(store))
        cert = client.issue(["wsgi.example", "www.wsgi.example"], solver)
    assert dns_names(cert) == ["wsgi.example", "www.wsgi.example"]
    assert hits == []  # challenge requests never reached the site
    assert list((store.root / "tokens").iterdir()) == []


PEBBLE_HOOK = """#!{python}
import json, os, sys, urllib.request
action, record, value = sys.argv[1:4]
body = {{"host": record, "value": value}} if action == "set" else {{"host": record}}
req = urllib.request.Request(
    os.environ["CHALLTESTSRV"] + ("/set-txt" if action == "set" else "/clear-txt"),
    data=json.dumps(body).encode(), method="POST")
urllib.request.build_opener(urllib.request.ProxyHandler({{}})).open(req, timeout=10).read()
"""


def test_dns_hook_wildcard(client: AcmeClient, pebble: LocalPebble, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.write_text(PEBBLE_HOOK.format(python=sys.executable))
    hook.chmod(0o755)
    solver = DnsHookSolver(str(hook), env={"CHALLTESTSRV": pebble.challtestsrv_url})
    cert = client.issue(["*.wild.example", "wild.example"], solver)
    assert dns_names(cert) == ["*.wild.example", "wild.example"]
    store = FileStore(tmp_path / "home")
    save(store, "wild.example", cert)
    assert store.load_meta("wild.example").names == cert.names
