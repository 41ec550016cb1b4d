"""Chain analysis on lists of certificates as received; the strict verifier's verdict."""

from __future__ import annotations

from cryptography import x509

from certman.inspector import LinkStatus, TrustStore, analyze_chain, strict_verify
from tests.inspector import factory as f


def test_links_as_received(pki: f.PKI, store: TrustStore) -> None:
    ch = analyze_chain([pki.leaf.cert, pki.inter.cert, pki.root.cert], store=store)
    assert [ln.status for ln in ch.links] == [LinkStatus.OK, LinkStatus.OK, LinkStatus.TRUSTED]
    assert ch.path == (0, 1, 2) and ch.trusted and ch.root_included == 2
    assert ch.anchor is not None and "Test Root CA" in ch.anchor

    rev = analyze_chain([pki.root.cert, pki.inter.cert, pki.leaf.cert], store=store)
    assert rev.leaf == 2 and rev.path == (2, 1, 0) and rev.out_of_order
    assert rev.links[2].status == LinkStatus.OUT_OF_ORDER and rev.links[2].issuer == 1

    alone = analyze_chain([pki.leaf.cert], store=TrustStore([]))
    assert alone.links[0].status == LinkStatus.ISSUER_MISSING and not alone.complete

    selfsigned = analyze_chain([pki.root.cert], store=TrustStore([]))
    assert selfsigned.links[0].status == LinkStatus.SELF_SIGNED and selfsigned.complete


def test_strict_verify(pki: f.PKI, store: TrustStore) -> None:
    certs = [pki.leaf.cert, pki.inter.cert]
    assert strict_verify(certs, now=f.NOW, store=store, host="www.example.org") is None
    assert strict_verify(certs, now=f.NOW, store=store, host="other.example") is not None
    assert strict_verify(certs, now=f.NOW, store=TrustStore([])) is not None


def test_shared_shapes_are_memoised_but_each_leaf_is_verified(
    pki: f.PKI, store: TrustStore
) -> None:
    def chain(leaf: f.Issued) -> list[x509.Certificate]:
        return [leaf.cert, pki.inter.cert]  # the same intermediate object each time

    first = analyze_chain(chain(f.leaf(pki.inter, "a.example")), store=store)
    again = analyze_chain(chain(f.leaf(pki.inter, "b.example")), store=store)
    assert again is first and first.trusted and not first.bad_signatures
    # Same names and shape, but signed by another key: its own verdict.
    impostor = f.Issued(pki.inter.cert, f.ec_key(n=7))
    forged = f.leaf(impostor, "c.example")
    bad = analyze_chain(chain(forged), store=store)
    assert bad.bad_signatures == (0,) and bad.links[0].status == LinkStatus.BAD_SIGNATURE
    # A leaf alone: anchored on its own (not memoised), issuer missing.
    alone = analyze_chain([forged.cert], store=store)
    assert alone.links[0].status == LinkStatus.ISSUER_MISSING
    # Another store: another answer, not the memoised one.
    assert not analyze_chain(chain(f.leaf(pki.inter, "d.example")), store=TrustStore([])).trusted


def test_memoised_shapes_do_not_keep_a_store_alive(pki: f.PKI) -> None:
    import gc
    import weakref

    store = TrustStore([pki.root.cert])
    assert analyze_chain([f.leaf(pki.inter).cert, pki.inter.cert], store=store).trusted
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None


def test_leaf_signature_skipped_only_when_bad_signature_is_not_wanted(
    pki: f.PKI, store: TrustStore
) -> None:
    from certman.inspector import inspect

    impostor = f.Issued(pki.inter.cert, f.ec_key(n=8))
    forged = f.leaf(impostor, "forged.example")
    bundle = f.pem(forged, pki.inter)
    full = inspect(bundle, now=f.NOW, store=store)
    assert "bad-signature" in {x.rule for x in full.findings}
    assert full.chain.links[0].status == LinkStatus.BAD_SIGNATURE
    quick = inspect(bundle, now=f.NOW, store=store, rules={"distrusted-ca", "expired"})
    assert quick.chain.links[0].status == LinkStatus.UNCHECKED
    assert "not checked" in quick.chain.links[0].detail
    assert quick.chain.path == full.chain.path and quick.chain.trusted == full.chain.trusted
    # Two certificates with the issuer's name: still chosen by signature.
    other_inter = f.make_cert(pki.inter.cert.subject, issuer=pki.root, key=f.ec_key(n=9), ca=True)
    leaf = f.leaf(pki.inter, "real.example")
    both = inspect(f.pem(leaf, other_inter, pki.inter), now=f.NOW, store=store, rules={"expired"})
    assert both.chain.links[0].issuer == 2 and both.chain.links[0].status == LinkStatus.OUT_OF_ORDER
