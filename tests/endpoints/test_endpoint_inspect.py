"""What live servers send, judged by the inspector: findings fire from the handshake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from endpoint_helpers import DAY, NOW, AiaServer, Pki, TlsServer, make_cert
from OpenSSL import SSL

from certman.inspector.aia import AiaFetcher
from certman.inspector.endpoints import (
    ConnectOptions,
    EndpointSource,
    fetch_chain,
    parse_endpoint,
    scan_endpoints,
)
from certman.inspector.inspection import InspectOptions
from certman.inspector.model import ScanResult
from certman.inspector.scan import scan

Serve = Callable[..., TlsServer]
FAST = ConnectOptions(connect_timeout=2, handshake_timeout=2)


@pytest.fixture(scope="module")
def trust(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> InspectOptions:
    path = tmp_path_factory.mktemp("trust") / "roots.pem"
    path.write_bytes(pki.root.pem)
    return InspectOptions(trust_store=str(path))


def rules_of(result: ScanResult) -> dict[str, int | None]:
    assert result.report is not None, result.error
    return {f.rule: f.cert for f in result.report.findings}


def one(spec: str, options: InspectOptions, **kw: object) -> ScanResult:
    results = list(scan_endpoints([spec], now=NOW, options=options, connect=FAST, **kw))  # type: ignore[arg-type]
    assert len(results) == 1
    return results[0]


def test_good_chain_has_no_findings(pki: Pki, serve: Serve, trust: InspectOptions) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    result = one(f"localhost:{server.port}", trust)
    assert result.source == f"localhost:{server.port}"
    assert rules_of(result) == {}
    assert result.report is not None and result.report.host == "localhost"
    assert result.report.chain.trusted


def test_wrong_host_fires_hostname_mismatch(pki: Pki, serve: Serve, trust: InspectOptions) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    result = one("shop.customer.example", trust, connect_to=f"127.0.0.1:{server.port}")
    assert rules_of(result) == {"hostname-mismatch": 0}
    assert result.source == f"shop.customer.example:443 via 127.0.0.1:{server.port}"


def test_reversed_chain_fires_chain_order(serve: Serve, tmp_path: Path) -> None:
    root = make_cert("Rev Root", ca=True)
    upper = make_cert("Rev Upper", issuer=root, ca=True)
    lower = make_cert("Rev Lower", issuer=upper, ca=True)
    leaf = make_cert("localhost", issuer=lower, names=["localhost"])
    (tmp_path / "root.pem").write_bytes(root.pem)
    server = serve(chain=[leaf.cert, upper.cert, lower.cert], key=leaf.key)
    result = one(f"localhost:{server.port}", InspectOptions(trust_store=str(tmp_path / "root.pem")))
    assert "chain-order" in rules_of(result)


def test_missing_intermediate(pki: Pki, serve: Serve, trust: InspectOptions) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    assert rules_of(one(f"localhost:{server.port}", trust)) == {"missing-intermediate": 0}


def test_expired_intermediate(serve: Serve, tmp_path: Path) -> None:
    root = make_cert("Exp Root", ca=True)
    inter = make_cert(
        "Exp Intermediate", issuer=root, ca=True, not_before=NOW - 400 * DAY, not_after=NOW - DAY
    )
    leaf = make_cert("localhost", issuer=inter, names=["localhost"])
    (tmp_path / "root.pem").write_bytes(root.pem)
    server = serve(chain=[leaf.cert, inter.cert], key=leaf.key)
    result = one(f"localhost:{server.port}", InspectOptions(trust_store=str(tmp_path / "root.pem")))
    assert rules_of(result)["expired"] == 1


def test_self_signed(serve: Serve, trust: InspectOptions) -> None:
    alone = make_cert("localhost", names=["localhost"])
    server = serve(chain=[alone.cert], key=alone.key)
    assert "untrusted-root" in rules_of(one(f"localhost:{server.port}", trust))


@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_starttls_servers_are_inspected(
    proto: str, pki: Pki, serve: Serve, trust: InspectOptions
) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key, starttls=proto)
    result = one(f"{proto}://localhost:{server.port}", trust)
    assert result.source == f"{proto}://localhost:{server.port}"
    assert rules_of(result) == {}


def test_errors_become_error_results(trust: InspectOptions, serve: Serve) -> None:
    http = serve(mode="http")
    results = {
        r.source: r
        for r in scan_endpoints(
            ["bad spec!", f"127.0.0.1:{http.port}"], now=NOW, options=trust, connect=FAST
        )
    }
    assert results["bad spec!"].error_code == "endpoint-bad-spec"
    assert results[f"127.0.0.1:{http.port}"].error_code == "endpoint-handshake"
    assert results[f"127.0.0.1:{http.port}"].status == "error"


def test_fetch_intermediates_completes_the_judgement(
    aia_server: AiaServer, serve: Serve, tmp_path: Path
) -> None:
    root = make_cert("AIA Root", ca=True)
    inter = make_cert(
        "AIA Intermediate", issuer=root, ca=True, not_before=NOW - 400 * DAY, not_after=NOW - DAY
    )
    leaf = make_cert("localhost", issuer=inter, names=["localhost"], aia_url=aia_server.url("/i"))
    aia_server.routes["/i"] = ("application/pkix-cert", inter.der)
    (tmp_path / "root.pem").write_bytes(root.pem)
    options = InspectOptions(trust_store=str(tmp_path / "root.pem"))
    server = serve(chain=[leaf.cert], key=leaf.key)
    plain = one(f"localhost:{server.port}", options)
    assert rules_of(plain) == {"missing-intermediate": 0}
    assert aia_server.hits == {}  # never fetched without the opt-in

    fetched = one(f"localhost:{server.port}", options, fetcher=AiaFetcher(timeout=5))
    assert fetched.report is not None
    by_rule = {f.rule: f for f in fetched.report.findings}
    # Still reported: the server does not send its intermediate.
    assert "fetched over AIA: 'AIA Intermediate'" in by_rule["missing-intermediate"].message
    assert "trusted via" in by_rule["missing-intermediate"].message
    # And the fetched intermediate itself is judged.
    assert by_rule["expired"].cert is None
    assert by_rule["expired"].message.startswith("fetched 'AIA Intermediate': ")
    assert aia_server.hits == {"/i": 1}


def test_endpoint_source_plugs_into_scan(pki: Pki, serve: Serve, trust: InspectOptions) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    src = EndpointSource(parse_endpoint(f"localhost:{server.port}"), FAST)
    dead = EndpointSource(parse_endpoint("127.0.0.1:1"), FAST)
    results = {r.source: r for r in scan([src, dead], now=NOW, workers=1, options=trust)}
    assert rules_of(results[src.id]) == {"missing-intermediate": 0}
    assert results[dead.id].error_code == "endpoint-refused"


def test_many_endpoints_one_result_each(pki: Pki, serve: Serve, trust: InspectOptions) -> None:
    servers: list[TlsServer] = [
        serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key) for _ in range(5)
    ]
    specs = [f"localhost:{s.port}" for s in servers] * 20
    results = list(scan_endpoints(iter(specs), now=NOW, options=trust, connect=FAST, concurrency=8))
    assert len(results) == 100
    assert all(r.ok and rules_of(r) == {} for r in results)


def test_library_scan_recognises_endpoint_strings(
    pki: Pki, serve: Serve, trust: InspectOptions
) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    items = [f"localhost:{server.port}", "missing.example", "https://bad host/"]
    results = {r.source: r for r in scan(items, now=NOW, workers=1, options=trust)}
    assert rules_of(results[f"localhost:{server.port}"]) == {}
    assert results["https://bad host/"].error_code == "endpoint-bad-spec"
    # Not written like an endpoint: a (missing) file, never contacted.
    assert results["missing.example"].error_code == "file-unreadable"


def test_old_weak_servers_are_seen_and_judged(serve: Serve, trust: InspectOptions) -> None:
    # A TLS 1.0-only server with a 1024-bit RSA key: OpenSSL's default
    # security level refuses to talk to it at all; the scanner must still
    # read its certificate so weak-key can fire.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    server = serve(chain=[cert], key=key, ciphers=b"ALL:@SECLEVEL=0", max_version=SSL.TLS1_VERSION)
    assert rules_of(one(f"localhost:{server.port}", trust))["weak-key"] == 0
    got = fetch_chain(parse_endpoint(f"localhost:{server.port}"), options=FAST)
    assert got.tls_version == "TLSv1"
