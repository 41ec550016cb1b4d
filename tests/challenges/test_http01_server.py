"""The standalone HTTP-01 responder, driven with real HTTP requests over real sockets."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certman.challenges import ChallengeTask, HTTP01Server, MemoryTokenStore, StandaloneSolver
from certman.challenges.server import parse_listen_address
from certman.errors import ChallengeError, ConfigError

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def task(token: str = TOKEN, validation: str = KEYAUTH) -> ChallengeTask:
    return ChallengeTask("example.org", "dns", "http-01", token, validation)


@pytest.fixture
def server() -> Iterator[HTTP01Server]:
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "127.0.0.1", 0, connection_timeout=5) as srv:
        yield srv


def get(
    port: int, path: str, method: str = "GET", host: str = "127.0.0.1", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_valid_token_answered(server: HTTP01Server) -> None:
    status, headers, body = get(server.port, f"/.well-known/acme-challenge/{TOKEN}")
    assert status == 200
    assert body == KEYAUTH.encode()
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == str(len(KEYAUTH))


def test_head_has_no_body(server: HTTP01Server) -> None:
    status, headers, body = get(server.port, f"/.well-known/acme-challenge/{TOKEN}", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(KEYAUTH))


def test_token_added_while_running_is_answered(server: HTTP01Server) -> None:
    assert get(server.port, "/.well-known/acme-challenge/later")[0] == 404
    server.tokens.put("later", "later.x")
    assert get(server.port, "/.well-known/acme-challenge/later")[2] == b"later.x"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/index.html",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge",
        "/.well-known/acme-challenge/unknown-token",
        f"/.well-known/acme-challenge/{TOKEN}/",
        f"/.well-known/acme-challenge/{TOKEN}/x",
        f"/.well-known/acme-challenge/{TOKEN}%00",
        "/.well-known/acme-challenge/..%2f..%2fetc%2fpasswd",
        "/.well-known/acme-challenge/../../etc/passwd",
        f"/.well-known/acme-challenge/..%2f{TOKEN}",
        f"/.well-known/acme-challenge/%2e%2e/{TOKEN}",
        f"/.well-known/acme-challenge/{TOKEN[:10]}",
        "/.well-known/acme-challenge/" + "a" * 300,
        "/.well-known/acme-challenge/tok.en",
        f"/.WELL-KNOWN/acme-challenge/{TOKEN}",
        "/etc/passwd",
    ],
)
def test_everything_else_is_404(server: HTTP01Server, path: str) -> None:
    status, _, body = get(server.port, path)
    assert status == 404
    assert KEYAUTH.encode() not in body


def test_other_methods_are_405(server: HTTP01Server) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = get(
            server.port, f"/.well-known/acme-challenge/{TOKEN}", method, body=b"x=1"
        )
        assert status == 405
        assert headers["allow"] == "GET, HEAD"


def test_absolute_form_and_query_string(server: HTTP01Server) -> None:
    path = f"/.well-known/acme-challenge/{TOKEN}"
    response = raw(server.port, f"GET http://example.org{path} HTTP/1.1\r\n\r\n".encode())
    assert status_of(response) == 200
    assert response.endswith(KEYAUTH.encode())
    assert get(server.port, path + "?x=1")[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /" + b"a" * 20_000, 414),  # no newline at all: cut off early
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 40 + b"\r\n", 431),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_bad_and_oversized_requests_rejected(
    server: HTTP01Server, request_bytes: bytes, expected: int
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(request_bytes)  # the server may hang up before we finish
        try:
            response = s.recv(65536)
        except ConnectionResetError:
            pytest.fail("server reset the connection without an answer")
    assert status_of(response) == expected


def test_slow_client_is_cut_off_without_blocking_others() -> None:
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "127.0.0.1", 0, connection_timeout=0.5) as srv:
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        try:
            slow.sendall(b"GET /.well-known/acme-ch")  # ...and never finishes
            # Others are served while the slow one hangs on.
            for _ in range(3):
                assert get(srv.port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 200
            # Keep trickling bytes: an overall deadline still ends it with 408.
            response = b""
            try:
                for _ in range(200):
                    slow.sendall(b"a")
                    slow.settimeout(0.05)
                    try:
                        response += slow.recv(4096)
                    except TimeoutError:
                        continue
                    if response:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            slow.settimeout(30)
            response += slow.recv(4096) if not response.endswith(b"\n") else b""
            assert status_of(response) == 408
        finally:
            slow.close()


def test_full_server_evicts_the_oldest_connection() -> None:
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "127.0.0.1", 0, connection_timeout=30, max_connections=2) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(2)]
        try:
            # The newcomer (the CA, say) is served; the oldest idle one makes room.
            assert get(srv.port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 200
            assert status_of(idle[0].recv(4096)) == 503
            idle[1].sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert status_of(idle[1].recv(4096)) == 404
        finally:
            for s in idle:
                s.close()
        assert srv.evicted == 1


def test_flood_of_idle_connections_does_not_lock_out_the_ca() -> None:
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "127.0.0.1", 0, connection_timeout=60, max_connections=50) as srv:
        flood = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                s.sendall(b"GET /.well-known/acme-")  # and then nothing, for a minute
                flood.append(s)
            for _ in range(5):
                status, _, body = get(srv.port, f"/.well-known/acme-challenge/{TOKEN}")
                assert (status, body) == (200, KEYAUTH.encode())
        finally:
            for s in flood:
                s.close()
        assert srv.evicted >= 250
        assert threading.active_count() < 20  # a loop, not a thread per connection


def test_port_zero_reports_bound_port_and_stop_closes() -> None:
    srv = HTTP01Server(None, "127.0.0.1", 0)
    srv.start()
    port = srv.port
    assert port > 0 and srv.address == ("127.0.0.1", port)
    assert get(port, "/")[0] == 404
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_stop_does_not_wait_for_idle_clients() -> None:
    srv = HTTP01Server(None, "127.0.0.1", 0, connection_timeout=60)
    srv.start()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        idle.sendall(b"GET /")
        srv.stop()  # must return although the client would get 60 s
        with contextlib.suppress(ConnectionResetError):  # FIN, or RST with unread bytes
            assert idle.recv(4096) == b""
    finally:
        idle.close()


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_and_dual_stack() -> None:
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "::1", 0) as srv:
        assert get(srv.port, f"/.well-known/acme-challenge/{TOKEN}", host="::1")[0] == 200
    with HTTP01Server(tokens, "", 0) as srv:  # every address, both families
        for host in ("127.0.0.1", "::1"):
            assert get(srv.port, f"/.well-known/acme-challenge/{TOKEN}", host=host)[0] == 200


def test_port_in_use_is_a_clear_challenge_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ChallengeError) as err:
            HTTP01Server(None, "127.0.0.1", port).start()
        assert err.value.code == "challenge-port-in-use"
        assert f"127.0.0.1:{port}" in str(err.value)
        assert "already in use" in str(err.value)
        solver = StandaloneSolver("127.0.0.1", port)
        with pytest.raises(ChallengeError) as err:
            solver.present([task()])
        assert err.value.code == "challenge-port-in-use"


def test_key_authorization_not_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="certman")
    tokens = MemoryTokenStore()
    tokens.put(TOKEN, KEYAUTH)
    with HTTP01Server(tokens, "127.0.0.1", 0) as srv:
        assert get(srv.port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 200
    assert "answered token" in caplog.text  # the INFO line exists...
    assert KEYAUTH not in caplog.text  # ...without the key authorization
    assert KEYAUTH.split(".")[1] not in caplog.text


def test_standalone_solver_runs_only_while_tokens_are_out() -> None:
    solver = StandaloneSolver("127.0.0.1", 0)
    assert solver.challenge_types == ("http-01",)
    other = task("second-token", "second-token.x")
    solver.present([task()])
    port = solver.port
    solver.present([other])  # a second batch of the same order
    assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[2] == KEYAUTH.encode()
    assert get(port, "/.well-known/acme-challenge/second-token")[2] == b"second-token.x"
    solver.cleanup([task()])
    assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 404
    assert get(port, "/.well-known/acme-challenge/second-token")[0] == 200
    solver.cleanup([other])
    solver.cleanup([other])  # already gone: no error
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_standalone_solver_as_context_manager_stays_up() -> None:
    with StandaloneSolver("127.0.0.1", 0) as solver:
        port = solver.port
        solver.present([task()])
        solver.cleanup([task()])
        assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 404  # still listening
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_standalone_solver_refuses_dns01_and_bad_tokens() -> None:
    solver = StandaloneSolver("127.0.0.1", 0)
    with pytest.raises(ChallengeError) as err:
        solver.present([ChallengeTask("example.org", "dns", "dns-01", "tok", "v")])
    assert err.value.code == "challenge-unsupported-type"
    with pytest.raises(ChallengeError) as err:
        solver.present([task("../x")])
    assert err.value.code == "challenge-bad-token"
    assert not solver.server.running


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::]:80", ("::", 80)),
        ("[::1]", ("::1", 80)),
        ("::1", ("::1", 80)),
        ("8080", ("", 8080)),
        (":5002", ("", 5002)),
        ("*:80", ("", 80)),
        ("example.org", ("example.org", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen_address(spec: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(spec) == expected


@pytest.mark.parametrize("spec", ["a:b", "[::1", "[::1]x", "1.2.3.4:99999", "host:", "[::1]:"])
def test_parse_listen_address_errors(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_listen_address(spec)
    assert err.value.code == "config-bad-listen"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(max_size=3000))
def test_any_request_gets_a_well_formed_refusal(server: HTTP01Server, junk: bytes) -> None:
    """Whatever arrives, the answer is a complete HTTP response, and never the key auth."""
    response = raw(server.port, junk + b"\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 ")
    assert status_of(response) in {400, 404, 405, 414, 431, 505}
    assert KEYAUTH.encode() not in body
