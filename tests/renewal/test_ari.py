"""certman.client.ari: RFC 9773 certificate ids, parsing, and real HTTP(S) fetches."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from ari_server import Answer, AriServer, stub_cert_id
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st
from renewal_certs import Issued, make_ca, make_leaf

from certman import AcmeError
from certman.client.ari import (
    DEFAULT_RETRY_AFTER,
    USER_AGENT,
    cert_id,
    cert_id_from_parts,
    clamp_retry_after,
    decide_with_ari,
    discover_renewal_info_url,
    fetch_renewal_info,
    parse_cert_id,
    parse_renewal_info,
    parse_retry_after,
    renewal_info_url,
)
from certman.renewal import decide

# RFC 9773 Appendix A: the example certificate whose identifier §4.1 works out.
RFC9773_EXAMPLE = b"""-----BEGIN CERTIFICATE-----
MIIBQzCB66ADAgECAgUAh2VDITAKBggqhkjOPQQDAjAVMRMwEQYDVQQDEwpFeGFt
cGxlIENBMCIYDzAwMDEwMTAxMDAwMDAwWhgPMDAwMTAxMDEwMDAwMDBaMBYxFDAS
BgNVBAMTC2V4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeBZu
7cbpAYNXZLbbh8rNIzuOoqOOtmxA1v7cRm//AwyMwWxyHz4zfwmBhcSrf47NUAFf
qzLQ2PPQxdTXREYEnKMjMCEwHwYDVR0jBBgwFoAUaYhba4dGQEHhs3uEe6CuLN4B
yNQwCgYIKoZIzj0EAwIDRwAwRAIge09+S5TZAlw5tgtiVvuERV6cT4mfutXIlwTb
+FYN/8oCIClDsqBklhB9KAelFiYt9+6FDj3z4KGVelYM5MdsO3pK
-----END CERTIFICATE-----
"""
RFC9773_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


# -- certificate identifier ------------------------------------------------------


def test_rfc_9773_example_certificate() -> None:
    cert = x509.load_pem_x509_certificate(RFC9773_EXAMPLE)
    assert cert_id(cert) == RFC9773_ID


def test_rfc_9773_example_parts() -> None:
    aki = bytes.fromhex("69885b6b87464041e1b37b847ba0ae2cde01c8d4")
    assert cert_id_from_parts(aki, 0x87654321) == RFC9773_ID
    assert parse_cert_id(RFC9773_ID) == (aki, 0x87654321)


@pytest.mark.parametrize(
    ("serial", "der_hex"),
    [(0, "00"), (1, "01"), (0x7F, "7f"), (0x80, "0080"), (0xFF, "00ff"), (0x100, "0100"),
     (-1, "ff"), (-128, "80"), (-129, "ff7f")],
)  # fmt: skip
def test_serial_is_der_integer_content(serial: int, der_hex: str) -> None:
    ident = cert_id_from_parts(b"\x01", serial)
    assert parse_cert_id(ident)[1] == serial
    _, tail = ident.split(".")
    assert base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4)).hex() == der_hex


@given(st.binary(min_size=1, max_size=32), st.integers(min_value=1, max_value=2**159))
def test_cert_id_round_trips(key_id: bytes, serial: int) -> None:
    ident = cert_id_from_parts(key_id, serial)
    assert "=" not in ident and "+" not in ident and "/" not in ident
    assert parse_cert_id(ident) == (key_id, serial)


def test_cert_id_matches_an_independent_implementation() -> None:
    ca = make_ca()
    for serial in (0x80, 0x7F, 2**64 + 5, x509.random_serial_number()):
        leaf = make_leaf(ca, ["a.example"], serial=serial)
        assert cert_id(leaf.cert) == stub_cert_id(leaf.cert)


def test_certificate_without_aki_has_no_id() -> None:
    leaf = make_leaf(make_ca(), ["a.example"], with_aki=False)
    with pytest.raises(AcmeError) as info:
        cert_id(leaf.cert)
    assert info.value.code == "ari-no-aki"


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c", ".AIdlQyE", "aYhb.", "aY=.AI", "a/b.c"])
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cert_id(bad)


# -- parsing -----------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_parse_renewal_info_with_explanation_and_nanoseconds() -> None:
    body = json.dumps(
        {
            "suggestedWindow": {
                "start": "2026-03-20T04:00:00.123456789Z",
                "end": "2026-03-21T04:00:00+02:00",
            },
            "explanationURL": "https://ca.example/docs/ari",
        }
    )
    info = parse_renewal_info(body, now=NOW, retry_after="21600", cert_id="k.s")
    assert info.window.start == datetime(2026, 3, 20, 4, 0, 0, 123456, tzinfo=UTC)
    assert info.window.end == datetime(2026, 3, 21, 2, 0, tzinfo=UTC)
    assert info.explanation_url == "https://ca.example/docs/ari"
    assert info.next_check == NOW + timedelta(hours=6)
    assert info.fetched_at == NOW and info.cert_id == "k.s"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"suggestedWindow": "soon"}',
        b'{"suggestedWindow": {"start": "2026-03-20T04:00:00Z"}}',
        b'{"suggestedWindow": {"start": "2026-03-20T04:00:00", "end": "2026-03-21T04:00:00"}}',
        b'{"suggestedWindow": {"start": "2026-03-21T04:00:00Z", "end": "2026-03-20T04:00:00Z"}}',
        b'{"suggestedWindow": {"start": "2026-03-20T04:00:00Z", "end": "2026-03-20T04:00:00Z"}}',
        b'{"suggestedWindow": {"start": 1, "end": 2}}',
        b'{"suggestedWindow": {"start": "2026-03-20T04:00:00Z", "end": "2026-03-21T04:00:00Z"},'
        b' "explanationURL": 5}',
    ],
)
def test_invalid_renewal_info_is_an_error(body: bytes) -> None:
    with pytest.raises(AcmeError) as info:
        parse_renewal_info(body, now=NOW)
    assert info.value.code == "ari-invalid"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, NOW + DEFAULT_RETRY_AFTER),
        ("garbage", NOW + DEFAULT_RETRY_AFTER),
        ("3600", NOW + timedelta(hours=1)),
        ("0", NOW + timedelta(minutes=1)),  # clamped up to one minute
        ("5", NOW + timedelta(minutes=1)),
        ("864000", NOW + timedelta(days=1)),  # clamped down to one day
        ("Sun, 01 Mar 2026 14:00:00 GMT", NOW + timedelta(hours=2)),
        ("Sun, 01 Mar 2026 11:00:00 GMT", NOW + timedelta(minutes=1)),  # in the past
    ],
)
def test_retry_after_is_parsed_and_clamped(header: str | None, expected: datetime) -> None:
    assert clamp_retry_after(parse_retry_after(header, now=NOW), now=NOW) == expected


def test_renewal_info_url_from_directory() -> None:
    assert renewal_info_url({"renewalInfo": "https://ca.example/ari"}) == "https://ca.example/ari"
    assert renewal_info_url({"newOrder": "https://ca.example/new-order"}) is None
    assert renewal_info_url({"renewalInfo": 42}) is None


# -- fetching over real HTTP and HTTPS ------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("ARI stub test CA")


@pytest.fixture
def leaf(ca: Issued) -> Issued:
    now = datetime.now(UTC)
    return make_leaf(ca, ["www.example"], not_before=now - timedelta(days=1))


@pytest.fixture
def http_stub() -> Iterator[AriServer]:
    with AriServer() as server:
        yield server


def test_fetch_over_http(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    start, end = now + timedelta(days=50), now + timedelta(days=52)
    http_stub.set_window(
        stub_cert_id(leaf.cert),
        start,
        end,
        explanation_url="https://ca.example/why",
        retry_after="7200",
    )
    info = fetch_renewal_info(leaf.cert, http_stub.renewal_info_url, now=now)
    assert info is not None
    assert info.window.start == start.replace(microsecond=0)
    assert info.window.end == end.replace(microsecond=0)
    assert info.explanation_url == "https://ca.example/why"
    assert info.next_check == now + timedelta(hours=2)
    assert info.cert_id == stub_cert_id(leaf.cert)

    (request,) = http_stub.requests
    assert request.method == "GET"
    assert request.path == f"/renewal-info/{stub_cert_id(leaf.cert)}"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("certman/")
    assert "Authorization" not in request.headers

    # ... and the policy uses it.
    decision = decide(leaf.cert, info, now=now)
    assert decision.source == "ari" and not decision.due
    assert start.replace(microsecond=0) <= decision.at < end


def test_unknown_certificate_falls_back(http_stub: AriServer, leaf: Issued) -> None:
    assert fetch_renewal_info(leaf.cert, http_stub.renewal_info_url, now=datetime.now(UTC)) is None
    assert len(http_stub.requests) == 1


def test_ca_without_ari_makes_no_request(http_stub: AriServer, leaf: Issued) -> None:
    assert fetch_renewal_info(leaf.cert, None, now=datetime.now(UTC)) is None
    assert http_stub.requests == []


def test_expired_certificate_is_not_checked(http_stub: AriServer, ca: Issued) -> None:
    now = datetime.now(UTC)
    old = make_leaf(
        ca, ["old.example"], not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    http_stub.set_window(stub_cert_id(old.cert), now, now + timedelta(days=1))
    assert fetch_renewal_info(old.cert, http_stub.renewal_info_url, now=now) is None
    assert http_stub.requests == []


def test_certificate_without_aki_is_not_checked(http_stub: AriServer, ca: Issued) -> None:
    plain = make_leaf(ca, ["plain.example"], with_aki=False)
    assert fetch_renewal_info(plain.cert, http_stub.renewal_info_url, now=datetime.now(UTC)) is None
    assert http_stub.requests == []


def test_server_error_carries_retry_after(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    http_stub.set_answer(stub_cert_id(leaf.cert), Answer(503, b"busy", {"Retry-After": "120"}))
    with pytest.raises(AcmeError) as info:
        fetch_renewal_info(leaf.cert, http_stub.renewal_info_url, now=now)
    assert info.value.code == "ari-unavailable"
    assert info.value.details["status"] == 503
    retry_at = datetime.fromisoformat(info.value.details["retry_after"])
    assert retry_at == now + timedelta(seconds=120)


def test_invalid_window_from_server_is_an_error(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    http_stub.set_window(stub_cert_id(leaf.cert), now + timedelta(days=2), now + timedelta(days=1))
    with pytest.raises(AcmeError) as info:
        fetch_renewal_info(leaf.cert, http_stub.renewal_info_url, now=now)
    assert info.value.code == "ari-invalid"


def test_oversized_answer_is_refused(http_stub: AriServer, leaf: Issued) -> None:
    http_stub.set_answer(stub_cert_id(leaf.cert), Answer(200, b" " * 100_000))
    with pytest.raises(AcmeError) as info:
        fetch_renewal_info(leaf.cert, http_stub.renewal_info_url, now=datetime.now(UTC))
    assert info.value.code == "ari-invalid"


def test_unreachable_server_is_an_error(leaf: Issued) -> None:
    with AriServer() as server:
        url = server.renewal_info_url
    with pytest.raises(AcmeError) as info:
        fetch_renewal_info(leaf.cert, url, now=datetime.now(UTC), timeout=2)
    assert info.value.code == "ari-unavailable"


def test_session_is_used_and_left_unchanged(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    http_stub.set_window(stub_cert_id(leaf.cert), now + timedelta(days=1), now + timedelta(days=2))
    with requests.Session() as session:
        before = dict(session.headers)
        for _ in range(2):
            assert fetch_renewal_info(
                leaf.cert, http_stub.renewal_info_url, now=now, session=session
            )
        assert dict(session.headers) == before
    assert len(http_stub.requests) == 2


@pytest.fixture
def https_stub(ca: Issued, tmp_path: Path) -> Iterator[tuple[AriServer, Path]]:
    server_cert = make_leaf(ca, ["127.0.0.1", "localhost"])
    cert_path, key_path = server_cert.write(tmp_path, "server")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(
        ca.cert.public_bytes(x509.Encoding.PEM) if hasattr(x509, "Encoding") else b""
    )

    bundle.write_bytes(ca.cert.public_bytes(Encoding.PEM))
    with AriServer(tls=(cert_path, key_path)) as server:
        yield server, bundle


def test_fetch_over_https_with_explicit_ca_bundle(
    https_stub: tuple[AriServer, Path], leaf: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, bundle = https_stub
    # The machine's REQUESTS_CA_BUNDLE (system roots) must not replace our bundle.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    now = datetime.now(UTC)
    server.set_window(stub_cert_id(leaf.cert), now + timedelta(days=3), now + timedelta(days=4))
    info = fetch_renewal_info(leaf.cert, server.renewal_info_url, now=now, ca_bundle=bundle)
    assert info is not None and info.window.start == (now + timedelta(days=3)).replace(
        microsecond=0
    )


def test_https_without_trusting_the_ca_fails(
    https_stub: tuple[AriServer, Path], leaf: Issued
) -> None:
    server, bundle = https_stub
    now = datetime.now(UTC)
    server.set_window(stub_cert_id(leaf.cert), now + timedelta(days=3), now + timedelta(days=4))
    assert os.path.exists(bundle)
    with pytest.raises(AcmeError) as info:
        fetch_renewal_info(leaf.cert, server.renewal_info_url, now=now)
    assert info.value.code == "ari-unavailable"
    assert server.requests == []  # the handshake failed before any request


def test_discover_through_a_directory() -> None:
    directory = {"newNonce": "http://127.0.0.1:1/nonce", "newOrder": "http://127.0.0.1:1/order"}
    with AriServer(directory=directory) as ca_with_ari:
        assert discover_renewal_info_url(ca_with_ari.directory_url) == ca_with_ari.renewal_info_url
    with AriServer(directory=directory, advertise_ari=False) as ca_without_ari:
        assert discover_renewal_info_url(ca_without_ari.directory_url) is None
        with pytest.raises(AcmeError) as info:
            discover_renewal_info_url(f"{ca_without_ari.base_url}/nowhere")
        assert info.value.code == "acme-directory-unavailable"


# -- decide_with_ari: the per-certificate step of a renewal run --------------------------


def renewal_fetches(server: AriServer) -> int:
    return sum(r.path.startswith("/renewal-info/") for r in server.requests)


def test_decide_with_ari_respects_retry_after(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    http_stub.set_window(
        stub_cert_id(leaf.cert),
        now + timedelta(days=5),
        now + timedelta(days=6),
        retry_after="3600",
    )
    first = decide_with_ari(leaf.cert, None, http_stub.renewal_info_url, now=now)
    assert first.source == "ari" and not first.due
    assert first.state.ari_next_check == now + timedelta(hours=1)
    # Within the hour: no new request, same moment.
    again = decide_with_ari(
        leaf.cert, first.state, http_stub.renewal_info_url, now=now + timedelta(minutes=30)
    )
    assert renewal_fetches(http_stub) == 1 and again.at == first.at
    # The CA moves the window into the past; after the hour certman sees it and renews now.
    http_stub.set_window(stub_cert_id(leaf.cert), now - timedelta(days=1), now)
    later = now + timedelta(hours=1)
    moved = decide_with_ari(leaf.cert, again.state, http_stub.renewal_info_url, now=later)
    assert renewal_fetches(http_stub) == 2
    assert moved.due and moved.source == "ari" and "passed" in moved.reason


def test_decide_with_ari_falls_back_on_errors(http_stub: AriServer, leaf: Issued) -> None:
    now = datetime.now(UTC)
    ident = stub_cert_id(leaf.cert)
    http_stub.set_window(ident, now + timedelta(days=5), now + timedelta(days=6))
    known = decide_with_ari(leaf.cert, None, http_stub.renewal_info_url, now=now)
    http_stub.set_answer(ident, Answer(503, b"", {"Retry-After": "600"}))
    later = now + timedelta(hours=7)
    failed = decide_with_ari(leaf.cert, known.state, http_stub.renewal_info_url, now=later)
    # The remembered window still decides; the next check waits for the server's Retry-After.
    assert failed.source == "ari" and failed.at == known.at
    assert failed.state.ari_next_check == later + timedelta(minutes=10)
    # Unknown to the CA (404): the lifetime rule, asked again in 6 hours.
    http_stub.clear(ident)
    unknown = decide_with_ari(leaf.cert, None, http_stub.renewal_info_url, now=now)
    assert unknown.source == "lifetime"
    assert unknown.state.ari_next_check == now + DEFAULT_RETRY_AFTER


def test_decide_with_ari_skips_the_fetch_when_forced_or_without_ari(
    http_stub: AriServer, leaf: Issued
) -> None:
    now = datetime.now(UTC)
    forced = decide_with_ari(leaf.cert, None, http_stub.renewal_info_url, now=now, force=True)
    assert forced.due and forced.source == "forced"
    plain = decide_with_ari(leaf.cert, None, None, now=now)
    assert plain.source == "lifetime" and not plain.due
    assert renewal_fetches(http_stub) == 0
