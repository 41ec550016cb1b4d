"""Chain repair: leaf first, then issuers in order, no root, strays removed."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from endpoint_helpers import DAY, NOW, Pki, make_cert

from certman.errors import InspectorError
from certman.inspector.repair import build_path, pick_leaf, repair_chain


def names(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> list[str]:
    return [c.subject.rfc4514_string() for c in certs]


@pytest.fixture(scope="module")
def deep() -> dict[str, x509.Certificate]:
    root = make_cert("Root", ca=True)
    upper = make_cert("Upper CA", issuer=root, ca=True)
    lower = make_cert("Lower CA", issuer=upper, ca=True)
    leaf = make_cert("www.example", issuer=lower, names=["www.example"])
    other = make_cert("elsewhere.example", issuer=make_cert("Other CA", ca=True))
    return {
        "root": root.cert,
        "upper": upper.cert,
        "lower": lower.cert,
        "leaf": leaf.cert,
        "other": other.cert,
    }


def test_already_good_chain_is_unchanged(deep: dict[str, x509.Certificate]) -> None:
    got = repair_chain(
        [deep["leaf"], deep["lower"], deep["upper"]], now=NOW, anchors=[deep["root"]]
    )
    assert got.certificates == (deep["leaf"], deep["lower"], deep["upper"])
    assert got.complete and got.anchor == deep["root"] and got.root is None
    assert not got.changed


def test_reversed_with_root_and_stray(deep: dict[str, x509.Certificate]) -> None:
    received = [
        deep["root"],
        deep["upper"],
        deep["other"],
        deep["lower"],
        deep["leaf"],
        deep["lower"],
    ]
    got = repair_chain(received, now=NOW)
    assert got.certificates == (deep["leaf"], deep["lower"], deep["upper"])
    assert got.root == deep["root"]
    assert got.complete
    assert set(names(got.dropped)) == {
        "CN=Root,O=Certman Test",
        "CN=elsewhere.example,O=Certman Test",
    }
    text = "\n".join(got.changes)
    assert "issuance order" in text
    assert "removed the root 'Root'" in text
    assert "removed 'elsewhere.example'" in text
    assert "duplicate" in text
    pem = got.pem()
    assert pem.count(b"BEGIN CERTIFICATE") == 3
    assert x509.load_pem_x509_certificates(pem)[0] == deep["leaf"]
    assert deep["root"].public_bytes(Encoding.PEM) not in pem


def test_missing_intermediate_is_incomplete_until_fetched(
    deep: dict[str, x509.Certificate],
) -> None:
    got = repair_chain([deep["leaf"], deep["upper"]], now=NOW, anchors=[deep["root"]])
    assert not got.complete
    assert got.missing_issuer == "CN=Lower CA,O=Certman Test"
    fixed = repair_chain(
        [deep["leaf"], deep["upper"]], fetched=[deep["lower"]], now=NOW, anchors=[deep["root"]]
    )
    assert fixed.complete
    assert fixed.certificates == (deep["leaf"], deep["lower"], deep["upper"])
    assert fixed.fetched == (deep["lower"],)
    assert any("added the missing intermediate 'Lower CA'" in c for c in fixed.changes)


def test_without_anchors_an_intermediate_top_is_not_complete(
    deep: dict[str, x509.Certificate],
) -> None:
    got = repair_chain([deep["leaf"], deep["lower"], deep["upper"]], now=NOW)
    assert not got.complete  # nothing says Upper CA's issuer is trusted
    assert got.missing_issuer == "CN=Root,O=Certman Test"


def test_renewed_intermediate_beats_the_expired_one() -> None:
    pki = Pki.make()
    expired_twin = make_cert(
        "Certman Test Intermediate",
        issuer=pki.root,
        ca=True,
        key=pki.intermediate.key,
        not_before=NOW - 400 * DAY,
        not_after=NOW - 10 * DAY,
    )
    got = repair_chain(
        [pki.leaf.cert, expired_twin.cert, pki.intermediate.cert], now=NOW, anchors=[pki.root.cert]
    )
    assert got.intermediates == (pki.intermediate.cert,)
    assert got.dropped == (expired_twin.cert,)


def test_key_picks_the_leaf() -> None:
    pki = Pki.make()
    second = make_cert("second.example", issuer=pki.intermediate)
    certs = [second.cert, pki.leaf.cert, pki.intermediate.cert]
    assert pick_leaf(certs, now=NOW) == second.cert  # first non-CA
    assert pick_leaf(certs, now=NOW, key=pki.leaf.key) == pki.leaf.cert
    with pytest.raises(InspectorError) as info:
        pick_leaf(certs, now=NOW, key=make_cert("x").key)
    assert info.value.code == "repair-key-mismatch"


def test_self_signed_leaf_stays() -> None:
    alone = make_cert("localhost", names=["localhost"])
    got = repair_chain([alone.cert], now=NOW)
    assert got.certificates == (alone.cert,)
    assert got.complete and not got.changed


def test_empty_input() -> None:
    with pytest.raises(InspectorError) as info:
        repair_chain([], now=NOW)
    assert info.value.code == "repair-no-certificate"


def test_build_path_reaches_the_anchor(deep: dict[str, x509.Certificate]) -> None:
    path = build_path([deep["upper"], deep["leaf"], deep["lower"]], now=NOW, anchors=[deep["root"]])
    assert path.path == (deep["leaf"], deep["lower"], deep["upper"])
    assert path.anchor == deep["root"] and path.complete
