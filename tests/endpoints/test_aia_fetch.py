"""AIA caIssuers fetching against a real HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from endpoint_helpers import NOW, AiaServer, Pki, TlsServer, make_cert

from certman.errors import InspectorError
from certman.inspector.aia import (
    AiaFetcher,
    DirectoryAiaCache,
    MemoryAiaCache,
    ca_issuers_urls,
    fetch_missing,
    parse_issuer_certs,
)
from certman.inspector.endpoints import ConnectOptions, fetch_chain, parse_endpoint
from certman.inspector.repair import repair_chain

DER = "application/pkix-cert"
P7 = "application/pkcs7-mime"


def pki_with_aia(server: AiaServer, path: str = "/int.der") -> Pki:
    root = make_cert("AIA Test Root", ca=True)
    inter = make_cert("AIA Test Intermediate", issuer=root, ca=True)
    leaf = make_cert("localhost", issuer=inter, names=["localhost"], aia_url=server.url(path))
    return Pki(root, inter, leaf)


def test_ca_issuers_urls_only_http() -> None:
    leaf = make_cert("a", aia_url="http://ca.example/int.cer")
    assert ca_issuers_urls(leaf.cert) == ["http://ca.example/int.cer"]
    assert ca_issuers_urls(make_cert("b", aia_url="ldap://ca.example/x").cert) == []
    assert ca_issuers_urls(make_cert("c").cert) == []


def test_parse_every_format() -> None:
    a, b = make_cert("A", ca=True), make_cert("B", ca=True)
    certs = [a.cert, b.cert]
    p7_der = pkcs7.serialize_certificates(certs, Encoding.DER)
    p7_pem = pkcs7.serialize_certificates(certs, Encoding.PEM)
    assert parse_issuer_certs(a.der) == [a.cert]
    assert parse_issuer_certs(a.pem + b.pem) == certs
    assert parse_issuer_certs(b"\n" + a.pem) == [a.cert]
    # PKCS#7 holds a SET OF certificates: DER encoding may reorder them.
    assert sorted(c.subject.rfc4514_string() for c in parse_issuer_certs(p7_der)) == [
        "CN=A,O=Certman Test",
        "CN=B,O=Certman Test",
    ]
    assert set(parse_issuer_certs(p7_pem)) == set(certs)
    for junk in (b"", b"<html>oops</html>", a.der[:50]):
        with pytest.raises(InspectorError) as info:
            parse_issuer_certs(junk)
        assert info.value.code == "aia-parse"


def test_fetch_der_and_cache(aia_server: AiaServer) -> None:
    pki = pki_with_aia(aia_server)
    aia_server.routes["/int.der"] = (DER, pki.intermediate.der)
    fetcher = AiaFetcher(timeout=5)
    url = aia_server.url("/int.der")
    assert fetcher.fetch(url) == [pki.intermediate.cert]
    assert fetcher.fetch(url) == [pki.intermediate.cert]
    assert aia_server.hits["/int.der"] == 1
    assert fetcher.downloads == 1
    assert fetcher.find_issuer(pki.leaf.cert) == pki.intermediate.cert


def test_pkcs7_bundle(aia_server: AiaServer) -> None:
    pki = pki_with_aia(aia_server, "/int.p7c")
    stray = make_cert("Not the issuer", ca=True)
    body = pkcs7.serialize_certificates([stray.cert, pki.intermediate.cert], Encoding.DER)
    aia_server.routes["/int.p7c"] = (P7, body)
    assert AiaFetcher(timeout=5).find_issuer(pki.leaf.cert) == pki.intermediate.cert


def test_single_flight(aia_server: AiaServer) -> None:
    pki = pki_with_aia(aia_server)
    aia_server.routes["/int.der"] = (DER, pki.intermediate.der)
    aia_server.block.add("/int.der")
    fetcher = AiaFetcher(timeout=10)
    results: list[list[x509.Certificate]] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetcher.fetch(aia_server.url("/int.der"))))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    aia_server.release.set()
    for t in threads:
        t.join(10)
    assert len(results) == 8 and all(r == [pki.intermediate.cert] for r in results)
    assert aia_server.hits["/int.der"] == 1


def test_directory_cache_survives_the_fetcher(aia_server: AiaServer, tmp_path: Path) -> None:
    pki = pki_with_aia(aia_server)
    aia_server.routes["/int.der"] = (DER, pki.intermediate.der)
    url = aia_server.url("/int.der")
    cache_dir = tmp_path / "aia"
    AiaFetcher(cache=DirectoryAiaCache(cache_dir), timeout=5).fetch(url)
    assert (cache_dir.stat().st_mode & 0o777) == 0o700
    again = AiaFetcher(cache=DirectoryAiaCache(cache_dir), timeout=5)
    assert again.fetch(url) == [pki.intermediate.cert]
    assert again.downloads == 0 and aia_server.hits["/int.der"] == 1
    # A stale entry is a miss.
    import datetime as dt

    stale = DirectoryAiaCache(cache_dir, max_age=dt.timedelta(seconds=-1))
    assert stale.get(url) is None
    # A damaged entry is a miss, not an error.
    for f in cache_dir.glob("*.pem"):
        f.write_bytes(b"garbage")
    assert DirectoryAiaCache(cache_dir).get(url) is None


def test_memory_cache_is_bounded() -> None:
    cache = MemoryAiaCache(max_entries=2)
    for i in range(3):
        cache.put(f"u{i}", (b"x",))
    assert cache.get("u0") is None and cache.get("u2") == (b"x",)


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda s: s.routes.update({"/x": (DER, b"\x30" * 5000)}), "aia-too-large"),
        (
            lambda s: (s.routes.update({"/x": (DER, b"\x30" * 5000)}), s.no_length.add("/x")),
            "aia-too-large",
        ),
        (lambda s: None, "aia-http"),
        (lambda s: s.routes.update({"/x": (DER, b"not a cert")}), "aia-parse"),
        (lambda s: s.routes.update({"/x": ("redirect", b"file:///etc/passwd")}), "aia-bad-url"),
        (lambda s: s.routes.update({"/x": ("redirect", b"ftp://127.0.0.1/x")}), "aia-bad-url"),
        (lambda s: (s.routes.update({"/x": (DER, b"")}), s.block.add("/x")), "aia-timeout"),
    ],
    ids=[
        "too-large",
        "too-large-streamed",
        "404",
        "junk",
        "redirect-to-file",
        "redirect-to-ftp",
        "timeout",
    ],
)
def test_limits_and_failures(
    aia_server: AiaServer, setup: Callable[[AiaServer], object], code: str
) -> None:
    setup(aia_server)
    fetcher = AiaFetcher(timeout=0.5, max_bytes=1000)
    with pytest.raises(InspectorError) as info:
        fetcher.fetch(aia_server.url("/x"))
    assert info.value.code == code
    # A failed URL fails fast afterwards: no second request.
    before = aia_server.hits.get("/x", 0)
    with pytest.raises(InspectorError):
        fetcher.fetch(aia_server.url("/x"))
    assert aia_server.hits.get("/x", 0) == before


def test_only_http_urls() -> None:
    with pytest.raises(InspectorError) as info:
        AiaFetcher().fetch("file:///etc/passwd")
    assert info.value.code == "aia-bad-url"


def test_wrong_certificate_is_not_accepted(aia_server: AiaServer) -> None:
    pki = pki_with_aia(aia_server)
    impostor = make_cert("AIA Test Intermediate", ca=True)  # same name, other key
    aia_server.routes["/int.der"] = (DER, impostor.der)
    errors: list[str] = []
    assert AiaFetcher(timeout=5).find_issuer(pki.leaf.cert, errors) is None
    assert "did not serve the issuer" in errors[0]


def test_fetch_missing_walks_up_and_stops_at_the_anchor(aia_server: AiaServer) -> None:
    root = make_cert("Deep Root", ca=True)
    upper = make_cert("Deep Upper", issuer=root, ca=True)
    lower = make_cert("Deep Lower", issuer=upper, ca=True, aia_url=aia_server.url("/upper.der"))
    leaf = make_cert("localhost", issuer=lower, aia_url=aia_server.url("/lower.der"))
    aia_server.routes["/lower.der"] = (DER, lower.der)
    aia_server.routes["/upper.der"] = (DER, upper.der)
    fetcher = AiaFetcher(timeout=5)
    outcome = fetch_missing([leaf.cert], fetcher, now=NOW, anchors=[root.cert])
    assert outcome.complete and outcome.errors == ()
    assert outcome.fetched == (lower.cert, upper.cert)
    # Complete bundles fetch nothing.
    again = fetch_missing(
        [leaf.cert, lower.cert, upper.cert], fetcher, now=NOW, anchors=[root.cert]
    )
    assert again.fetched == () and again.complete
    assert aia_server.hits == {"/lower.der": 1, "/upper.der": 1}


def test_fetch_missing_reports_why_it_stopped(aia_server: AiaServer) -> None:
    pki = pki_with_aia(aia_server)  # nothing served at /int.der
    outcome = fetch_missing(
        [pki.leaf.cert], AiaFetcher(timeout=5), now=NOW, anchors=[pki.root.cert]
    )
    assert not outcome.complete
    assert "HTTP 404" in outcome.errors[0]
    no_aia = fetch_missing([make_cert("x", issuer=pki.intermediate).cert], AiaFetcher(), now=NOW)
    assert "has no AIA caIssuers URL" in no_aia.errors[-1]


def test_repair_a_live_server_missing_its_intermediate(
    aia_server: AiaServer, serve: Callable[..., TlsServer]
) -> None:
    pki = pki_with_aia(aia_server)
    aia_server.routes["/int.der"] = (DER, pki.intermediate.der)
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)  # forgot the intermediate
    result = fetch_chain(parse_endpoint(f"localhost:{server.port}"), options=ConnectOptions(2, 2))
    received = [x509.load_der_x509_certificate(d) for d in result.chain]
    broken = repair_chain(received, now=NOW, anchors=[pki.root.cert])
    assert not broken.complete
    outcome = fetch_missing(received, AiaFetcher(timeout=5), now=NOW, anchors=[pki.root.cert])
    fixed = repair_chain(received, fetched=outcome.fetched, now=NOW, anchors=[pki.root.cert])
    assert fixed.complete
    assert fixed.certificates == (pki.leaf.cert, pki.intermediate.cert)
    assert fixed.pem() == pki.leaf.pem + pki.intermediate.pem
