"""Answer HTTP-01 from inside an existing WSGI site (Flask, Django, anything WSGI).

Two shapes, both reading a :class:`~certman.challenges.http01.TokenStore`:

- :func:`make_wsgi_app` — a tiny WSGI application that answers only the
  challenge path (404 for everything else); mount it under your server or
  run it with any WSGI server.
- :class:`ChallengeMiddleware` — wraps your application and intercepts only
  ``/.well-known/acme-challenge/...``; every other request goes to your app
  untouched.

Give them a store that the issuing side writes to: a ``MemoryTokenStore``
shared in one process, or ``StoreTokenStore(FileStore(...))`` /
``StoreTokenStore(PostgresStore(...))`` when certman issues from another
process or machine. See ``docs/challenges.md`` for Flask and Django examples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from certman.challenges.http01 import CHALLENGE_PATH_PREFIX, TokenStore, token_from_path

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


def _answer(
    tokens: TokenStore, environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    # PATH_INFO is already percent-decoded by the server; "..%2f" arrives as
    # "../", which no valid token contains, so it is simply not found.
    path = environ.get("PATH_INFO", "")
    headers = [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
    if method not in ("GET", "HEAD"):
        body = b"Method Not Allowed\n"
        start_response(
            "405 Method Not Allowed",
            [*headers, ("Allow", "GET, HEAD"), ("Content-Length", str(len(body)))],
        )
        return [body]
    token = token_from_path(path)
    value = tokens.get(token) if token is not None else None
    if token is None or value is None:
        body = b"Not Found\n"
        status = "404 Not Found"
    else:
        log.info("WSGI HTTP-01 responder: answered token %s", token)
        body = value.encode("ascii", "replace")
        status = "200 OK"
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [b""] if method == "HEAD" else [body]


def make_wsgi_app(tokens: TokenStore) -> WSGIApplication:
    """A WSGI app answering ``GET /.well-known/acme-challenge/<token>`` from ``tokens``.

    200 ``text/plain`` with the key authorization for a known token; 404 for
    any other path or token; 405 for methods other than GET/HEAD. Thread
    safe when ``tokens`` is.
    """

    def acme_challenge_app(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        return _answer(tokens, environ, start_response)

    return acme_challenge_app


class ChallengeMiddleware:
    """WSGI middleware: serve HTTP-01 tokens, pass every other request to ``app``.

    Requests whose ``PATH_INFO`` starts with ``/.well-known/acme-challenge/``
    are answered from ``tokens`` (200 / 404 / 405 as :func:`make_wsgi_app`).
    With ``passthrough_unknown=True`` a token certman does not know is handed
    to ``app`` instead of 404 (for a site that also serves challenges for
    another tool). Thread safe when ``tokens`` and ``app`` are.
    """

    def __init__(
        self, app: WSGIApplication, tokens: TokenStore, *, passthrough_unknown: bool = False
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.passthrough_unknown = passthrough_unknown

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CHALLENGE_PATH_PREFIX):
            return self.app(environ, start_response)
        if self.passthrough_unknown:
            token = token_from_path(path)
            if token is None or self.tokens.get(token) is None:
                return self.app(environ, start_response)
        return _answer(self.tokens, environ, start_response)
