"""The DER shortcut agrees with cryptography's parser, and gives up on odd input."""

from __future__ import annotations

import ipaddress

from cryptography import x509

from certman.inspector.der import quick_facts
from tests.inspector import factory as f


def _expected(cert: x509.Certificate) -> tuple[bytes, bytes, tuple[str, ...], bool]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(n.value) for n in san if isinstance(n, x509.DNSName | x509.IPAddress))
    except x509.ExtensionNotFound:
        sans = ()
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    return cert.issuer.public_bytes(), cert.subject.public_bytes(), sans, ca


def test_agrees_with_cryptography(pki: f.PKI) -> None:
    ip_leaf = f.make_cert(f.name("ip"), issuer=pki.inter, sans=None)
    builder_ip = (
        x509.CertificateBuilder()
        .subject_name(f.name("mixed"))
        .issuer_name(pki.inter.cert.subject)
        .public_key(f.ec_key().public_key())
        .serial_number(1)
        .not_valid_before(f.NOW)
        .not_valid_after(f.NOW + f.DAY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("a.example"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                    x509.RFC822Name("x@example.org"),
                ]
            ),
            critical=True,
        )
    )
    assert isinstance(pki.inter.key, f.ec.EllipticCurvePrivateKey)
    mixed = builder_ip.sign(pki.inter.key, f.hashes.SHA256())
    sct = f.leaf(pki.inter, sct_times=(f.NOW,))
    for cert in (pki.root.cert, pki.inter.cert, pki.leaf.cert, ip_leaf.cert, mixed, sct.cert):
        facts = quick_facts(cert)
        assert facts is not None
        assert (facts.issuer, facts.subject, facts.sans, facts.is_ca) == _expected(cert)
    facts = quick_facts(sct.cert)
    assert facts is not None and facts.has_sct
    assert quick_facts(pki.leaf.cert).has_sct is False  # type: ignore[union-attr]


def test_from_der_also_gives_tbs_signature_and_the_fingerprint(pki: f.PKI) -> None:
    import hashlib

    from cryptography.hazmat.primitives import hashes

    from certman.inspector.der import quick_facts_der

    for issued in (pki.root, pki.inter, pki.leaf):
        facts = quick_facts_der(issued.der)
        assert facts is not None
        assert (facts.issuer, facts.subject, facts.sans, facts.is_ca) == _expected(issued.cert)
        assert facts.tbs == issued.cert.tbs_certificate_bytes
        assert facts.signature == issued.cert.signature
        assert hashlib.sha256(issued.der).digest() == issued.cert.fingerprint(hashes.SHA256())
    assert quick_facts_der(pki.leaf.der + b"\x00") is None  # trailing bytes
    assert quick_facts_der(pki.leaf.der[:-5]) is None  # truncated
    assert quick_facts_der(b"\x04\x00") is None
