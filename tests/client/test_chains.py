"""Longer chains and alternate chains (PEBBLE_CHAIN_LENGTH=3, PEBBLE_ALTERNATE_ROOTS=2)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from certman.client import AcmeClient, fetch_directory, select_chain
from certman.client.order import chain_top_issuer, split_pem_chain
from certman.keys import generate_private_key
from certman.testing import LocalPebble
from tests.client.helpers import Http01Solver, start_pebble

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def chained() -> Iterator[tuple[LocalPebble, AcmeClient, Http01Solver]]:
    p = start_pebble(chain_length=3, alternate_roots=2)
    solver = Http01Solver(p.http_port)
    directory = fetch_directory(p.directory_url, ca_bundle=p.ca_bundle)
    client = AcmeClient(directory, generate_private_key(), ca_bundle=p.ca_bundle)
    try:
        client.register(agree_tos=True)
        yield p, client, solver
    finally:
        client.close()
        solver.close()
        p.stop()


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _verify(fullchain: str, root_pem: str) -> None:
    certs = [x509.load_pem_x509_certificate(b.encode()) for b in split_pem_chain(fullchain)]
    root = x509.load_pem_x509_certificate(root_pem.encode())
    for child, parent in zip(certs, [*certs[1:], root], strict=True):
        child.verify_directly_issued_by(parent)


def test_chain_length_three(chained: tuple[LocalPebble, AcmeClient, Http01Solver]) -> None:
    pebble, client, solver = chained
    cert = client.issue(["long.example"], solver)
    assert len(split_pem_chain(cert.chain_pem)) == 3  # three intermediates
    assert len(split_pem_chain(cert.fullchain_pem)) == 4
    _verify(cert.fullchain_pem, pebble.root_pem(0))  # default chain -> root 0


def test_alternates_are_downloaded(chained: tuple[LocalPebble, AcmeClient, Http01Solver]) -> None:
    pebble, client, solver = chained
    cert = client.issue(["alt.example"], solver)
    assert len(cert.alternates) == 2
    roots = {_cn(x509.load_pem_x509_certificate(r.encode()).subject): r for r in pebble.roots_pem()}
    tops = [chain_top_issuer(c) for c in (cert.fullchain_pem, *cert.alternates)]
    assert sorted(t or "" for t in tops) == sorted(roots)  # one chain per root
    for chain in (cert.fullchain_pem, *cert.alternates):
        _verify(chain, roots[chain_top_issuer(chain) or ""])


@pytest.mark.parametrize("index", [1, 2])
def test_preferred_chain_by_top_issuer_cn(
    chained: tuple[LocalPebble, AcmeClient, Http01Solver], index: int
) -> None:
    pebble, client, solver = chained
    wanted = _cn(x509.load_pem_x509_certificate(pebble.root_pem(index).encode()).subject)
    cert = client.issue([f"pref{index}.example"], solver, preferred_chain=wanted.lower())
    assert chain_top_issuer(cert.fullchain_pem) == wanted
    _verify(cert.fullchain_pem, pebble.root_pem(index))
    assert len(cert.alternates) == 2
    assert all(chain_top_issuer(c) != wanted for c in cert.alternates)


def test_unknown_preferred_chain_falls_back_to_default(
    chained: tuple[LocalPebble, AcmeClient, Http01Solver],
) -> None:
    pebble, client, solver = chained
    cert = client.issue(["nopref.example"], solver, preferred_chain="No Such Root")
    _verify(cert.fullchain_pem, pebble.root_pem(0))


def test_select_chain_is_pure() -> None:
    assert select_chain([], None) == 0
    assert select_chain(["", ""], "x") == 0
