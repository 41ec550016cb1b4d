"""ARI against real Pebble: a proxy adds ``renewalInfo`` to Pebble's directory.

Pebble 2.4.0 has no ARI, so ``AriServer`` serves Pebble's own directory with
a ``renewalInfo`` URL added and answers the RenewalInfo requests itself; all
ACME requests (accounts, orders, certificates) still go to the real Pebble.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from ari_server import AriServer, stub_cert_id
from cryptography import x509

from certman.challenges import StandaloneSolver
from certman.client import AcmeClient, Directory, fetch_directory
from certman.client.ari import cert_id, fetch_renewal_info
from certman.keys import generate_private_key
from certman.renewal import ari_check_due, decide, record_success
from certman.testing import LocalPebble
from tests.conftest import running_pebble

SIX_DAYS = 6 * 24 * 3600

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(validity_period=SIX_DAYS)


@pytest.fixture(scope="module")
def proxy(pebble: LocalPebble) -> Iterator[AriServer]:
    with AriServer(
        upstream_directory=pebble.directory_url, upstream_ca_bundle=str(pebble.ca_bundle)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def solver(pebble: LocalPebble) -> Iterator[StandaloneSolver]:
    with StandaloneSolver("127.0.0.1", pebble.http_port) as running:
        yield running


@pytest.fixture(scope="module")
def directory(proxy: AriServer, pebble: LocalPebble) -> Directory:
    return fetch_directory(proxy.directory_url, ca_bundle=pebble.ca_bundle)


@pytest.fixture(scope="module")
def client(directory: Directory, pebble: LocalPebble) -> Iterator[AcmeClient]:
    with AcmeClient(directory, generate_private_key(), ca_bundle=pebble.ca_bundle) as acme:
        acme.register(agree_tos=True)
        yield acme


def test_directory_through_the_proxy_advertises_ari(
    directory: Directory, proxy: AriServer, pebble: LocalPebble
) -> None:
    assert directory.renewal_info == proxy.renewal_info_url
    plain = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    assert plain.renewal_info is None


def test_pebble_certificate_through_ari_and_renewal_with_replaces(
    client: AcmeClient, solver: StandaloneSolver, proxy: AriServer, pebble: LocalPebble
) -> None:
    issued = client.issue(["ari.example", "www.ari.example"], solver)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    ident = cert_id(cert)
    assert ident == stub_cert_id(cert)
    now = datetime.now(UTC)
    state = record_success(None, now=now)

    # The CA does not know the certificate yet (404): the lifetime rule, half of 6 days.
    assert ari_check_due(state, cert, now=now)
    info = fetch_renewal_info(
        cert, client.directory.renewal_info, now=now, ca_bundle=pebble.ca_bundle
    )
    assert info is None
    lifetime = decide(cert, info, now=now, state=state)
    assert (lifetime.due, lifetime.source) == (False, "lifetime")
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(validity - timedelta(days=6)) <= timedelta(seconds=1)
    assert lifetime.at == cert.not_valid_after_utc - validity / 2

    # The CA asks for an early renewal (a window that began an hour ago).
    proxy.set_window(
        ident,
        now - timedelta(hours=1),
        now + timedelta(hours=1),
        explanation_url="https://pebble.example/incident",
    )
    info = fetch_renewal_info(
        cert, client.directory.renewal_info, now=now, ca_bundle=pebble.ca_bundle
    )
    assert info is not None and info.cert_id == ident
    first = decide(cert, info, now=now, state=state)
    assert first.source == "ari" and first.state.ari_chosen_at is not None
    # Later the chosen moment has surely come; the next check obeys Retry-After (6 h).
    later = now + timedelta(hours=1)
    due = decide(cert, None, now=later, state=first.state)
    assert due.due and due.source == "ari" and "pebble.example/incident" in due.reason
    assert not ari_check_due(due.state, cert, now=later)

    renewed = client.issue(list(issued.names), solver, replaces=ident)
    new_cert = x509.load_pem_x509_certificate(renewed.cert_pem.encode())
    assert new_cert.serial_number != cert.serial_number
    assert renewed.replaces == ident
    assert cert_id(new_cert) != ident
    fetches = [r for r in proxy.requests if r.path.startswith("/renewal-info/")]
    assert all(r.method == "GET" and "Authorization" not in r.headers for r in fetches)
    assert len(fetches) == 2


def test_stub_keys_windows_by_certificate_too(
    client: AcmeClient, solver: StandaloneSolver, proxy: AriServer, pebble: LocalPebble
) -> None:
    issued = client.issue(["by-cert.example"], solver)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    now = datetime.now(UTC)
    proxy.set_window(cert, now + timedelta(days=2), now + timedelta(days=3), retry_after=None)
    info = fetch_renewal_info(cert, proxy.renewal_info_url, now=now, ca_bundle=pebble.ca_bundle)
    assert info is not None and info.next_check == now + timedelta(hours=6)
    proxy.clear(stub_cert_id(cert))
    assert fetch_renewal_info(cert, proxy.renewal_info_url, now=now) is None
