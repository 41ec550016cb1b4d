"""`certman` against a Pebble that requires External Account Binding and offers
alternate chains (``PEBBLE_ALTERNATE_ROOTS``, ``PEBBLE_CHAIN_LENGTH``)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from certman.testing import LocalPebble
from tests.cli.conftest import Certman
from tests.conftest import running_pebble

pytestmark = pytest.mark.pebble

EAB_KID = "kid-certman"
EAB_KEY = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def eab_pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(eab_keys={EAB_KID: EAB_KEY}, alternate_roots=2, chain_length=3)


@pytest.fixture()
def eab_certman(eab_pebble: LocalPebble, tmp_path: Path) -> Certman:
    return Certman(tmp_path / "home", eab_pebble)


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_register_needs_eab_and_works_with_it(eab_certman: Certman) -> None:
    refused = eab_certman.run("account", "register", "--agree-tos", check=False)
    assert refused.returncode == 1
    assert "external-account-required" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (eab_certman.home / "accounts").exists() or not list(
        (eab_certman.home / "accounts").rglob("account.json")
    )
    half = eab_certman.run("account", "register", "--agree-tos", "--eab-kid", EAB_KID, check=False)
    assert half.returncode == 2
    out = eab_certman.run(
        "account",
        "register",
        "--agree-tos",
        "--eab-kid",
        EAB_KID,
        "--eab-hmac-key",
        EAB_KEY,
        "--json",
    )
    data = json.loads(out.stdout)
    assert data["status"] == "valid" and data["eab_key_id"] == EAB_KID
    assert EAB_KEY not in out.stdout


def test_preferred_chain_and_longer_chains(eab_certman: Certman, eab_pebble: LocalPebble) -> None:
    eab_certman.run(
        "account", "register", "--agree-tos", "--eab-kid", EAB_KID, "--eab-hmac-key", EAB_KEY
    )
    roots = [x509.load_pem_x509_certificate(p.encode()) for p in eab_pebble.roots_pem()]
    wanted = _cn(roots[2].subject)
    eab_certman.run(
        "issue", "-d", "chain.example", *eab_certman.listen, "--preferred-chain", wanted
    )
    live = eab_certman.home / "certs" / "chain.example" / "live"
    chain = x509.load_pem_x509_certificates((live / "chain.pem").read_bytes())
    assert len(chain) == 3  # PEBBLE_CHAIN_LENGTH=3: three intermediates above the leaf
    assert _cn(chain[-1].issuer) == wanted
    meta = json.loads((eab_certman.home / "certs" / "chain.example" / "meta.json").read_text())
    assert meta["preferred_chain"] == wanted
