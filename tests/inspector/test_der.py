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


def test_name_text_agrees_with_cryptography_or_gives_up() -> None:
    from cryptography.x509.oid import NameOID

    from certman.inspector.der import name_text_der

    def attr(oid: x509.ObjectIdentifier, value: str, kind: object = None) -> x509.NameAttribute:
        if kind is None:
            return x509.NameAttribute(oid, value)
        return x509.NameAttribute(oid, value, kind)  # type: ignore[arg-type]

    plain = [
        x509.Name([attr(NameOID.COMMON_NAME, "www.example.org")]),
        x509.Name(
            [
                attr(NameOID.COUNTRY_NAME, "US"),
                attr(NameOID.STATE_OR_PROVINCE_NAME, "New York"),
                attr(NameOID.LOCALITY_NAME, "Albany"),
                attr(NameOID.ORGANIZATION_NAME, "Example (Test) Co."),
                attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit-1/2:3=4?"),
                attr(NameOID.DOMAIN_COMPONENT, "example"),
                attr(NameOID.USER_ID, "u1"),
                attr(NameOID.STREET_ADDRESS, "1 Main St"),
                attr(NameOID.COMMON_NAME, "CA 1", x509.name._ASN1Type.PrintableString),
            ]
        ),
        x509.Name([attr(NameOID.COMMON_NAME, "*.example.org")]),  # UTF8String
        x509.Name([attr(NameOID.DOMAIN_COMPONENT, "a_b*c")]),  # IA5String
        x509.Name([]),
    ]
    for name in plain:
        assert name_text_der(name.public_bytes()) == name.rfc4514_string()
    odd = [
        x509.Name([attr(NameOID.ORGANIZATION_NAME, "A, B + C")]),  # needs escaping
        x509.Name([attr(NameOID.COMMON_NAME, "#hash")]),
        x509.Name([attr(NameOID.COMMON_NAME, "trailing ")]),
        x509.Name([attr(NameOID.COMMON_NAME, "Zoë")]),  # not ASCII
        x509.Name([attr(NameOID.COMMON_NAME, "a*b", x509.name._ASN1Type.PrintableString)]),
        x509.Name([attr(NameOID.EMAIL_ADDRESS, "a@example.org")]),  # no short name
        x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [attr(NameOID.COMMON_NAME, "a"), attr(NameOID.ORGANIZATION_NAME, "b")]
                )
            ]
        ),
    ]
    for name in odd:
        assert name_text_der(name.public_bytes()) is None, name
    assert name_text_der(plain[0].public_bytes()[:-1]) is None  # truncated
    assert name_text_der(plain[0].public_bytes() + b"\x00") is None  # trailing
