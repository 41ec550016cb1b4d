"""Reading chains from real loopback TLS servers, and every failure as a result."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
from cryptography import x509
from endpoint_helpers import Pki, TlsServer, make_cert, refused_port

from certman.inspector.endpoints import (
    ConnectOptions,
    Endpoint,
    EndpointResult,
    fetch_chain,
    fetch_chains,
    parse_endpoint,
)

Serve = Callable[..., TlsServer]
FAST = ConnectOptions(connect_timeout=2.0, handshake_timeout=2.0)


def ders(*certs: x509.Certificate) -> tuple[bytes, ...]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return tuple(c.public_bytes(Encoding.DER) for c in certs)


def fetch(spec: str, **kw: object) -> EndpointResult:
    return fetch_chain(parse_endpoint(spec, **kw), options=FAST)  # type: ignore[arg-type]


def test_good_chain_is_read_as_sent(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    result = fetch(f"localhost:{server.port}")
    assert result.ok, result.error
    assert result.chain == ders(pki.leaf.cert, pki.intermediate.cert)
    assert result.peer == f"127.0.0.1:{server.port}"
    assert result.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert result.cipher
    assert server.sni_seen == ["localhost"]
    assert b"BEGIN CERTIFICATE" in result.pem()


def test_reversed_chain_comes_back_in_the_wrong_order(serve: Serve) -> None:
    root = make_cert("Root", ca=True)
    upper = make_cert("Upper CA", issuer=root, ca=True)
    lower = make_cert("Lower CA", issuer=upper, ca=True)
    leaf = make_cert("localhost", issuer=lower, names=["localhost"])
    # Sent: leaf, then the intermediates top-down (wrong), then the root (extra).
    sent = [leaf.cert, upper.cert, lower.cert, root.cert]
    server = serve(chain=sent, key=leaf.key)
    result = fetch(f"https://localhost:{server.port}/")
    assert result.chain == ders(*sent)


def test_missing_intermediate_and_self_signed_are_not_refused(pki: Pki, serve: Serve) -> None:
    # Verification is off: a chain that could never verify is still read.
    lonely = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    assert fetch(f"localhost:{lonely.port}").chain == ders(pki.leaf.cert)
    selfsigned = make_cert("localhost", names=["localhost"])
    server = serve(chain=[selfsigned.cert], key=selfsigned.key)
    assert fetch(f"localhost:{server.port}").chain == ders(selfsigned.cert)


def test_sni_follows_the_name_with_connect_to(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    result = fetch("shop.customer.example", connect_to=f"127.0.0.1:{server.port}")
    assert result.ok, result.error
    assert server.sni_seen == ["shop.customer.example"]
    assert result.endpoint is not None and result.endpoint.host == "shop.customer.example"
    assert result.label == f"shop.customer.example:443 via 127.0.0.1:{server.port}"


def test_ip_literal_sends_no_sni(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    assert fetch(f"127.0.0.1:{server.port}").ok
    assert server.sni_seen == [None]


def test_ipv6_loopback(pki: Pki, serve: Serve) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = serve(chain=[pki.leaf.cert], key=pki.leaf.key, host="::1")
    except OSError:
        pytest.skip("::1 not configured")
    result = fetch(f"[::1]:{server.port}")
    assert result.ok, result.error
    assert result.peer == f"[::1]:{server.port}"


@pytest.mark.parametrize("proto", ["smtp", "imap", "pop3", "ftp"])
def test_starttls_explicit(proto: str, pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key, starttls=proto)
    result = fetch(f"localhost:{server.port}", starttls=proto)
    assert result.ok, result.error
    assert result.chain == ders(pki.leaf.cert, pki.intermediate.cert)
    assert result.label == f"{proto}://localhost:{server.port}"
    if proto == "smtp":
        assert server.commands_seen == ["EHLO certman.invalid", "STARTTLS"]


def test_starttls_from_the_url_scheme(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key, starttls="imap")
    assert fetch(f"imap://localhost:{server.port}").ok


def test_starttls_by_default_on_well_known_ports(pki: Pki, serve: Serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Port 25 cannot be bound unprivileged; point the name at our SMTP server
    # with --connect-to and let the *endpoint's* port (25) choose STARTTLS.
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key, starttls="smtp")
    ep = parse_endpoint("mail.example:25", connect_to=f"127.0.0.1:{server.port}")
    assert ep.starttls == "smtp"
    result = fetch_chain(ep, options=FAST)
    assert result.ok, result.error
    assert server.sni_seen == ["mail.example"]


@pytest.mark.parametrize(
    ("proto", "reply", "reason"),
    [
        ("smtp", "refuse", "SMTP STARTTLS: refused: 454"),
        ("smtp", "no-offer", "server does not offer STARTTLS"),
        ("imap", "refuse", "IMAP STARTTLS: refused: a1 NO"),
        ("pop3", "refuse", "POP3 STARTTLS: refused: -ERR"),
        ("ftp", "refuse", "FTP STARTTLS: refused: 534"),
    ],
)
def test_starttls_refused(proto: str, reply: str, reason: str, pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key, starttls=proto, starttls_reply=reply)
    result = fetch(f"localhost:{server.port}", starttls=proto)
    assert result.error is not None
    assert result.error.code == "endpoint-starttls"
    assert result.error.phase == "starttls"
    assert reason in result.error.message


def test_starttls_against_a_tls_port_fails_cleanly(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    result = fetch_chain(
        parse_endpoint(f"localhost:{server.port}", starttls="smtp"),
        options=ConnectOptions(connect_timeout=2, handshake_timeout=0.5),
    )
    # The TLS server waits for a ClientHello; we wait for a greeting.
    assert result.error is not None
    assert result.error.code == "endpoint-timeout"
    assert result.error.phase == "starttls"


def test_refused() -> None:
    port = refused_port()
    result = fetch(f"127.0.0.1:{port}")
    assert result.error is not None
    assert result.error.code == "endpoint-refused"
    assert result.error.message == f"127.0.0.1:{port}: connection refused"
    assert result.chain == ()


def test_dns_failure_through_the_real_resolver_path() -> None:
    # The resolver seam: the real getaddrinfo would ask the network's DNS;
    # this one fails the way it does (EAI_NONAME) without leaving the host.
    def resolver(host: str, port: int, **kw: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    opts = ConnectOptions(connect_timeout=1, handshake_timeout=1, resolver=resolver)
    result = fetch_chain(parse_endpoint("nonexistent.invalid"), options=opts)
    assert result.error is not None
    assert result.error.code == "endpoint-dns"
    assert result.error.phase == "dns"
    assert result.error.message == "cannot resolve nonexistent.invalid: Name or service not known"


def test_localhost_resolves_through_the_system_resolver(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    assert fetch(f"localhost:{server.port}").ok  # /etc/hosts, real getaddrinfo


def test_handshake_timeout(serve: Serve) -> None:
    server = serve(mode="silent")
    result = fetch_chain(
        parse_endpoint(f"127.0.0.1:{server.port}"),
        options=ConnectOptions(connect_timeout=2, handshake_timeout=0.3),
    )
    assert result.error is not None
    assert result.error.code == "endpoint-timeout"
    assert result.error.phase == "handshake"
    assert "TLS handshake timed out" in result.error.message


def test_connect_timeout() -> None:
    # A listener whose accept queue is full and never drained: the kernel
    # drops further SYNs, so connect() hangs until our timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        result = fetch_chain(
            parse_endpoint(f"127.0.0.1:{port}"),
            options=ConnectOptions(connect_timeout=0.5, handshake_timeout=0.5),
        )
        assert result.error is not None
        if result.error.phase == "handshake":
            pytest.skip("this kernel accepts beyond the backlog; no loopback connect timeout")
        assert result.error.code == "endpoint-timeout"
        assert result.error.phase == "connect"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_plain_http_port_is_a_handshake_failure(serve: Serve) -> None:
    server = serve(mode="http")
    result = fetch(f"127.0.0.1:{server.port}")
    assert result.error is not None
    assert result.error.code == "endpoint-handshake"
    assert result.error.message.startswith("TLS handshake failed: ")
    assert "--starttls" in result.error.message


def test_hang_up_is_a_handshake_failure(serve: Serve) -> None:
    server = serve(mode="close")
    result = fetch(f"127.0.0.1:{server.port}")
    assert result.error is not None
    assert result.error.code == "endpoint-handshake"


def test_many_at_once_with_every_failure_class(pki: Pki, serve: Serve) -> None:
    good = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    smtp = serve(chain=[pki.leaf.cert], key=pki.leaf.key, starttls="smtp", starttls_reply="refuse")
    http = serve(mode="http")
    dead = refused_port()
    specs = [f"localhost:{good.port}"] * 20 + [
        f"127.0.0.1:{dead}",
        f"smtp://localhost:{smtp.port}",
        f"127.0.0.1:{http.port}",
        "not a host!",
    ]
    results = list(fetch_chains(iter(specs), concurrency=4, options=FAST))
    assert len(results) == len(specs)
    codes = sorted(r.error.code for r in results if r.error)
    assert codes == [
        "endpoint-bad-spec",
        "endpoint-handshake",
        "endpoint-refused",
        "endpoint-starttls",
    ]
    assert sum(r.ok for r in results) == 20
    bad = next(r for r in results if r.error and r.error.code == "endpoint-bad-spec")
    assert bad.spec == "not a host!" and bad.endpoint is None and bad.label == "not a host!"


def test_input_is_streamed_and_in_flight_work_is_bounded(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    pulled = 0
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def specs():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for _ in range(200):
            pulled += 1
            yield Endpoint("localhost", server.port)

    def counting_fetch(ep: Endpoint, opts: ConnectOptions) -> EndpointResult:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            return fetch_chain(ep, options=opts)
        finally:
            with lock:
                in_flight -= 1

    gen = fetch_chains(specs(), concurrency=5, options=FAST, fetch=counting_fetch)
    first = next(gen)
    assert first.ok
    # After the first result only a bounded window has been read from the input.
    assert pulled <= 2 * 5 + 1
    rest = list(gen)
    assert len(rest) == 199 and all(r.ok for r in rest)
    assert most <= 5


def test_a_bug_in_one_fetch_does_not_stop_the_scan(pki: Pki, serve: Serve) -> None:
    def flaky(ep: Endpoint, opts: ConnectOptions) -> EndpointResult:
        if ep.port == 1:
            raise RuntimeError("boom")
        return fetch_chain(ep, options=opts)

    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    results = list(
        fetch_chains(
            [Endpoint("localhost", 1), Endpoint("localhost", server.port)],
            options=FAST,
            fetch=flaky,
        )
    )
    codes = sorted(r.error.code if r.error else "ok" for r in results)
    assert codes == ["endpoint-internal", "ok"]


def test_closing_early_cancels_the_rest(pki: Pki, serve: Serve) -> None:
    server = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    pulled = 0

    def specs():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield f"localhost:{server.port}"

    gen = fetch_chains(specs(), concurrency=2, options=FAST)
    assert next(gen).ok
    gen.close()
    assert pulled < 50
