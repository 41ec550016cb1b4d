"""Fixtures for the live-endpoint tests: a PKI and real loopback servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from endpoint_helpers import AiaServer, Pki, TlsServer


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.make()


@pytest.fixture
def serve() -> Iterator[Callable[..., TlsServer]]:
    """Start TlsServer(...) instances; all are closed at the end of the test."""
    servers: list[TlsServer] = []

    def start(**kwargs: Any) -> TlsServer:
        server = TlsServer(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def aia_server() -> Iterator[AiaServer]:
    server = AiaServer()
    yield server
    server.close()
