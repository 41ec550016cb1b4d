"""Transport behaviour: reachability, TLS trust, User-Agent, badNonce and Retry-After.

Most tests use a real Pebble. Retry-After and the exact headers sent are
checked at the HTTP seam with a small local server (Pebble never sends
``rateLimited``), next to the real-Pebble tests of the same code path.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from certman import __version__
from certman.client import USER_AGENT, AcmeClient, fetch_directory
from certman.client.network import AcmeSession, parse_retry_after, problem_error
from certman.errors import AcmeError
from certman.keys import generate_private_key
from certman.testing import LocalPebble
from tests.client.helpers import Http01Solver, start_pebble


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_directory_is_a_clear_error() -> None:
    url = f"https://127.0.0.1:{_closed_port()}/dir"
    with pytest.raises(AcmeError) as info:
        fetch_directory(url, timeout=3)
    err = info.value
    assert err.code == "acme-unreachable"
    assert "cannot reach the ACME server" in str(err)
    assert "\n" not in str(err)
    assert len(str(err)) < 200


@pytest.mark.pebble
def test_tls_needs_the_ca_bundle(pebble: LocalPebble) -> None:
    with pytest.raises(AcmeError) as info:
        fetch_directory(pebble.directory_url)
    assert info.value.code == "acme-tls"
    assert "--ca-bundle" in str(info.value)
    assert "_ssl.c" not in str(info.value)


@pytest.mark.pebble
def test_url_that_is_not_a_directory(pebble: LocalPebble) -> None:
    for url in (
        pebble.directory_url.replace("/dir", "/no-such-path"),  # 404
        pebble.management_url + "/roots/0",  # a PEM, not JSON
    ):
        with pytest.raises(AcmeError) as info:
            fetch_directory(url, ca_bundle=pebble.ca_bundle)
        assert info.value.code == "acme-bad-directory"
        assert url in str(info.value)


@pytest.mark.pebble
def test_requests_ca_bundle_in_environment_is_not_used_implicitly(
    pebble: LocalPebble, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests would prefer REQUESTS_CA_BUNDLE over verify=True; certman
    # always passes its bundle explicitly, so the variable changes nothing.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.ca_bundle))
    with pytest.raises(AcmeError) as info:
        fetch_directory(pebble.directory_url)
    assert info.value.code == "acme-tls"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    assert directory.new_order.startswith("https://127.0.0.1:")


@pytest.mark.pebble
def test_directory_fields(pebble: LocalPebble) -> None:
    d = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    assert d.url == pebble.directory_url
    assert d.key_change is not None
    assert d.terms_of_service is not None
    assert d.external_account_required is False
    assert d.profiles == {}
    assert d.renewal_info is None  # Pebble 2.4.0 has no ARI
    with pytest.raises(AttributeError):
        d.url = "x"  # type: ignore[misc]


@pytest.mark.pebble
def test_heavy_nonce_rejection_is_survived() -> None:
    # 30%: acme's single retry would fail about one request in eleven.
    p = start_pebble(nonce_reject=30)
    solver = Http01Solver(p.http_port)
    try:
        directory = fetch_directory(p.directory_url, ca_bundle=p.ca_bundle)
        with AcmeClient(directory, generate_private_key(), ca_bundle=p.ca_bundle) as client:
            client.register(agree_tos=True)
            for i in range(3):
                client.issue([f"nonce{i}.example"], solver)
            assert client.bad_nonce_count > 0
    finally:
        solver.close()
        p.stop()


@pytest.mark.pebble
def test_bad_nonce_retries_are_bounded() -> None:
    p = start_pebble(nonce_reject=100)
    try:
        directory = fetch_directory(p.directory_url, ca_bundle=p.ca_bundle)
        with AcmeClient(
            directory, generate_private_key(), ca_bundle=p.ca_bundle, bad_nonce_retries=3
        ) as client:
            with pytest.raises(AcmeError) as info:
                client.register(agree_tos=True)
            assert info.value.code == "acme-bad-nonce"
            assert client.bad_nonce_count == 3
    finally:
        p.stop()


class FakeAcme:
    """Records requests; answers from a script of (status, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.nonce = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                fake.nonce += 1
                self.send_response(status)
                self.send_header("Replay-Nonce", f"bm9uY2U{fake.nonce}")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                fake.requests.append(("HEAD", self.path, dict(self.headers)))
                self._answer(200, {}, None)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, dict(self.headers)))
                base = f"http://127.0.0.1:{fake.port}"
                self._answer(
                    200,
                    {"Content-Type": "application/json"},
                    {
                        "newNonce": base + "/nonce",
                        "newAccount": base + "/acct",
                        "newOrder": base + "/order",
                        "revokeCert": base + "/revoke",
                        "meta": {"profiles": {"classic": "the usual", "shortlived": "6 days"}},
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                fake.requests.append(("POST", self.path, dict(self.headers)))
                status, headers, body = fake.script.pop(0)
                if status == 0:  # drop the connection without answering
                    self.close_connection = True
                    return
                self._answer(status, headers, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/dir"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake() -> Iterator[FakeAcme]:
    f = FakeAcme()
    try:
        yield f
    finally:
        f.close()


RATE_LIMITED = {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}


def test_user_agent_is_certman_version_only(fake: FakeAcme) -> None:
    directory = fetch_directory(fake.url)
    fake.script = [(201, {"Location": "http://x/acct/1"}, {"status": "valid"})]
    with AcmeClient(directory, generate_private_key()) as client:
        client.register(agree_tos=True)
    assert f"certman/{__version__}" == USER_AGENT
    for _, _, headers in fake.requests:
        assert headers["User-Agent"] == USER_AGENT
        assert not {"From", "X-Forwarded-For", "Via"} & set(headers)


def test_retry_after_is_honoured_then_succeeds(fake: FakeAcme) -> None:
    directory = fetch_directory(fake.url)
    fake.script = [
        (429, {"Retry-After": "0", "Content-Type": "application/problem+json"}, RATE_LIMITED),
        (201, {"Location": "http://x/acct/1"}, {"status": "valid"}),
    ]
    with AcmeClient(directory, generate_private_key()) as client:
        account = client.register(agree_tos=True)
    assert account.url == "http://x/acct/1"
    assert [r[0] for r in fake.requests].count("POST") == 2


def test_long_retry_after_raises_with_the_delay(fake: FakeAcme) -> None:
    directory = fetch_directory(fake.url)
    fake.script = [(429, {"Retry-After": "3600"}, RATE_LIMITED)]
    with (
        AcmeClient(directory, generate_private_key()) as client,
        pytest.raises(AcmeError) as info,
    ):
        client.register(agree_tos=True)
    assert info.value.code == "acme-rate-limited"
    assert info.value.details["retry_after"] == 3600
    assert [r[0] for r in fake.requests].count("POST") == 1


def test_nonces_are_reused_not_fetched_per_request(fake: FakeAcme) -> None:
    directory = fetch_directory(fake.url)
    fake.script = [(200, {}, {"status": "valid"}) for _ in range(5)]
    session = AcmeSession(directory.new_nonce, generate_private_key(), account_url="http://x/1")
    try:
        for _ in range(5):
            session.post_as_get(f"http://127.0.0.1:{fake.port}/thing")
    finally:
        session.close()
    assert [r[0] for r in fake.requests].count("HEAD") == 1  # only the very first


def test_profile_offered_is_sent_and_unknown_profile_refused(fake: FakeAcme) -> None:
    # Pebble 2.4.0 has no profiles: checked here at the seam with a fake
    # directory that offers two.
    directory = fetch_directory(fake.url)
    assert dict(directory.profiles) == {"classic": "the usual", "shortlived": "6 days"}
    with (
        AcmeClient(directory, generate_private_key(), account_url="http://x/1") as client,
        pytest.raises(AcmeError) as info,
    ):
        client.issue(["p.example"], Http01Solver.__new__(Http01Solver), profile="tlsserver")
    assert info.value.code == "acme-profile-not-offered"
    assert "classic, shortlived" in str(info.value)
    assert not [r for r in fake.requests if r[0] == "POST"]  # refused before any order


def test_problem_error_mapping() -> None:
    err = problem_error(
        {
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "subproblems": [
                {
                    "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                    "detail": "name is blocked",
                    "identifier": {"type": "dns", "value": "bad.example"},
                }
            ],
        },
        status=400,
    )
    assert err.code == "acme-rejected-identifier"
    assert err.identifier == "bad.example"
    assert "bad.example: name is blocked" in str(err)
    assert err.details["subproblems"][0]["identifier"] == "bad.example"

    replaced = problem_error({"type": "urn:ietf:params:acme:error:alreadyReplaced"})
    assert replaced.code == "acme-already-replaced"
    assert replaced.problem_type is not None
    assert replaced.problem_type.endswith("alreadyReplaced")

    other = problem_error({"type": "https://ca.example/problems/odd", "detail": "odd"})
    assert other.code == "acme-problem"
    assert problem_error("not a dict").code == "acme-problem"


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    )
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_already_replaced_is_raised_unchanged(fake: FakeAcme) -> None:
    # Pebble 2.4.0 has no ARI, so the CA's alreadyReplaced answer is played here.
    directory = fetch_directory(fake.url)
    fake.script = [
        (
            409,
            {"Content-Type": "application/problem+json"},
            {
                "type": "urn:ietf:params:acme:error:alreadyReplaced",
                "detail": "certificate already replaced",
            },
        )
    ]
    with (
        AcmeClient(directory, generate_private_key(), account_url="http://x/1") as client,
        pytest.raises(AcmeError) as info,
    ):
        client.issue(["r.example"], Http01Solver.__new__(Http01Solver), replaces="abc.def")
    assert info.value.code == "acme-already-replaced"
    assert info.value.problem_type == "urn:ietf:params:acme:error:alreadyReplaced"


def test_connection_dropped_mid_post_is_retried_once(fake: FakeAcme) -> None:
    directory = fetch_directory(fake.url)
    fake.script = [(0, {}, None), (201, {"Location": "http://x/acct/1"}, {"status": "valid"})]
    with AcmeClient(directory, generate_private_key()) as client:
        assert client.register(agree_tos=True).url == "http://x/acct/1"
    assert [r[0] for r in fake.requests].count("POST") == 2
    fake.script = [(0, {}, None), (0, {}, None)]
    with (
        AcmeClient(directory, generate_private_key()) as client,
        pytest.raises(AcmeError) as info,
    ):
        client.register(agree_tos=True)
    assert info.value.code == "acme-unreachable"
