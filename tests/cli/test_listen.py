"""--listen of issue/renew: challenges.parse_listen_address's syntax, a real port required."""

from __future__ import annotations

import pytest

from certman.cli._manager import parse_listen
from certman.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8080", ("", 8080)),
        (":80", ("", 80)),
        ("*:80", ("", 80)),
        ("127.0.0.1:5002", ("127.0.0.1", 5002)),
        ("[::1]:80", ("::1", 80)),
        ("65535", ("", 65535)),
    ],
)
def test_accepted(spec: str, expected: tuple[str, int]) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "0", "host:0", "host", "::1", "[::1]", "[::1]80", "65536", "x:y", "a:b:80", "²"]
)
def test_refused(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_listen(spec)
    assert err.value.code == "invalid-listen"
