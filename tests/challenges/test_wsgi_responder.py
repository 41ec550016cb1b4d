"""The WSGI app and middleware, served by wsgiref and queried over real HTTP."""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from certman.challenges import ChallengeMiddleware, MemoryTokenStore, make_wsgi_app
from tests.conftest import serving

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(app: WSGIApplication) -> Iterator[int]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    with serving(server):
        yield server.server_port


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def site(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Stands in for a Flask/Django application."""
    body = f"site: {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def tokens() -> MemoryTokenStore:
    store = MemoryTokenStore()
    store.put(TOKEN, KEYAUTH)
    return store


BAD_PATHS = [
    "/.well-known/acme-challenge/unknown",
    "/.well-known/acme-challenge/",
    "/.well-known/acme-challenge/..%2f..%2fetc%2fpasswd",
    f"/.well-known/acme-challenge/..%2f{TOKEN}",
    f"/.well-known/acme-challenge/{TOKEN}/extra",
    f"/.well-known/acme-challenge/{TOKEN}%2f",
    "/.well-known/acme-challenge/a%00b",
]


def test_app_answers_tokens_only(tokens: MemoryTokenStore) -> None:
    with serve(make_wsgi_app(tokens)) as port:
        status, headers, body = get(port, f"/.well-known/acme-challenge/{TOKEN}")
        assert (status, body) == (200, KEYAUTH.encode())
        assert headers["content-type"] == "text/plain"
        assert get(port, f"/.well-known/acme-challenge/{TOKEN}", "HEAD")[::2] == (200, b"")
        for path in [*BAD_PATHS, "/", "/index.html"]:
            assert get(port, path)[0] == 404, path
        status, headers, _ = get(port, f"/.well-known/acme-challenge/{TOKEN}", "POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"


def test_middleware_intercepts_only_the_challenge_path(tokens: MemoryTokenStore) -> None:
    with serve(ChallengeMiddleware(site, tokens)) as port:
        assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[2] == KEYAUTH.encode()
        for path in BAD_PATHS:
            status, _, body = get(port, path)
            assert status == 404 and not body.startswith(b"site:"), path
        assert get(port, "/")[2] == b"site: GET /"
        assert get(port, "/blog/post", "POST")[2] == b"site: POST /blog/post"
        assert get(port, "/.well-known/security.txt")[2] == b"site: GET /.well-known/security.txt"
        # Tokens published after start are seen at once.
        tokens.put("fresh", "fresh.x")
        assert get(port, "/.well-known/acme-challenge/fresh")[2] == b"fresh.x"
        tokens.delete("fresh")
        assert get(port, "/.well-known/acme-challenge/fresh")[0] == 404


def test_middleware_passthrough_unknown(tokens: MemoryTokenStore) -> None:
    app = ChallengeMiddleware(site, tokens, passthrough_unknown=True)
    with serve(app) as port:
        assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[2] == KEYAUTH.encode()
        assert get(port, "/.well-known/acme-challenge/other")[2] == (
            b"site: GET /.well-known/acme-challenge/other"
        )


def test_wsgi_compliance_under_wsgiref_validator(tokens: MemoryTokenStore) -> None:
    """wsgiref.validate checks the WSGI protocol; its warnings are errors in this suite."""
    from wsgiref.validate import validator

    for app in (make_wsgi_app(tokens), ChallengeMiddleware(site, tokens)):
        with serve(validator(app)) as port:
            assert get(port, f"/.well-known/acme-challenge/{TOKEN}")[0] == 200
            assert get(port, f"/.well-known/acme-challenge/{TOKEN}", "HEAD")[0] == 200
            assert get(port, "/.well-known/acme-challenge/nope")[0] == 404
            assert get(port, f"/.well-known/acme-challenge/{TOKEN}", "POST")[0] == 405
