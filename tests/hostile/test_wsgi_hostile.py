"""The WSGI responder (mounted inside a site) under hostile paths, in-process.

A WSGI server hands over PATH_INFO already percent-decoded (``%2e%2e%2f`` is
``../`` by then) and not normalised. Whatever it holds, only the exact
challenge path of a known token is answered 200; invalid tokens never reach
the token store; and with the middleware every other path goes to the site,
untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certman.challenges.http01 import is_valid_token
from certman.challenges.wsgi import ChallengeMiddleware, make_wsgi_app

from .test_responder_hostile import KEYAUTH, TOKEN, TRAVERSALS, RecordingTokens

PREFIX = "/.well-known/acme-challenge/"


def call(app: Any, path: str, method: str = "GET") -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.append(status)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, start_response))
    return seen[0], body


def site(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("299 Site", [("Content-Type", "text/plain")])
    return [b"site\n"]


@pytest.fixture(scope="module")
def tokens() -> RecordingTokens:
    store = RecordingTokens()
    store.put(TOKEN, KEYAUTH)
    return store


@pytest.mark.parametrize("target", TRAVERSALS)
def test_decoded_traversals_get_nothing(tokens: RecordingTokens, target: str) -> None:
    app = make_wsgi_app(tokens)
    for path in {target, unquote(target), unquote(unquote(target))}:
        if path == PREFIX + TOKEN:  # decoding made it the real path (e.g. %2f -> /)
            continue
        status, body = call(app, path)
        assert status.startswith("404"), (path, status)
        assert KEYAUTH.encode() not in body


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from([*"/.%2eEfF5cC\\\\?#;:@&=+$,-_~!*'()aA0zZ\x00 \u00e9", TOKEN, ".."]),
        max_size=12,
    ).map("".join)
)
def test_only_the_exact_path_is_answered(suffix: str) -> None:
    tokens = RecordingTokens()
    tokens.put(TOKEN, KEYAUTH)
    app = ChallengeMiddleware(site, tokens)
    status, body = call(app, PREFIX + suffix)
    if suffix == TOKEN:
        assert (status, body) == ("200 OK", KEYAUTH.encode())
    else:
        assert status.startswith("404"), (suffix, status)
        assert KEYAUTH.encode() not in body
    # Invalid tokens never reach the store.
    assert all(is_valid_token(t) for t in tokens.asked), tokens.asked
    # Everything outside the challenge prefix belongs to the site.
    assert call(app, "/" + suffix)[0] == "299 Site" or ("/" + suffix).startswith(PREFIX)
