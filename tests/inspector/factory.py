"""Test certificates made on the fly with cryptography (no committed keys).

Keys are cached per test session (RSA generation is slow); certificates are
cheap. Legacy signatures (SHA-1, MD5), which cryptography refuses to produce,
are made by re-signing the TBS bytes with the low-level primitive.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# "Now" for the tests: the real hour, so certificates also suit CLI runs that
# use the clock; tests about fixed dates pass their own ``now``.
NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
DAY = dt.timedelta(days=1)
SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


@functools.cache
def rsa_key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


@functools.cache
def ec_key(curve: str = "secp256r1", n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(
        ec.SECP256R1() if curve == "secp256r1" else getattr(ec, curve.upper())()
    )


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKeyTypes

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def name(cn: str, o: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    return x509.Name(attrs)


def sct_extension(*times: dt.datetime) -> x509.UnrecognizedExtension:
    """A (fake-signed) embedded SCT list, as RFC 6962 encodes it."""
    scts = b""
    for t in times:
        ms = int(t.timestamp() * 1000)
        body = b"\x00" + b"\x11" * 32 + struct.pack(">Q", ms) + b"\x00\x00"
        body += b"\x04\x03" + struct.pack(">H", 4) + b"\x30\x02\x00\x00"  # sha256/ecdsa, dummy
        scts += struct.pack(">H", len(body)) + body
    tls = struct.pack(">H", len(scts)) + scts
    return x509.UnrecognizedExtension(SCT_OID, _der_octet_string(tls))


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_len(len(data)) + data


def make_cert(
    subject: x509.Name,
    *,
    issuer: Issued | None = None,
    key: PrivateKeyTypes | None = None,
    public_key: CertificatePublicKeyTypes | None = None,
    ca: bool = False,
    sans: tuple[str, ...] | None = ("www.example.org",),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = 90,
    sct_times: tuple[dt.datetime, ...] = (),
    serial: int | None = None,
) -> Issued:
    """A certificate for ``subject``, issued by ``issuer`` (self-signed when None)."""
    key = key if key is not None else ec_key()
    nb = not_before if not_before is not None else NOW - 10 * DAY
    na = not_after if not_after is not None else nb + days * DAY
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.cert.subject if issuer is not None else subject
    pub = public_key if public_key is not None else key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(pub)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(pub),  # type: ignore[arg-type]
            critical=False,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    if sct_times:
        builder = builder.add_extension(sct_extension(*sct_times), critical=False)
    assert isinstance(signer_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
    signer: CertificateIssuerPrivateKeyTypes = signer_key
    cert = builder.sign(signer, hashes.SHA256())
    return Issued(cert, key)


def root(
    cn: str = "Test Root CA", o: str | None = "Test PKI", key: PrivateKeyTypes | None = None
) -> Issued:
    return make_cert(
        name(cn, o),
        key=key or ec_key(n=100),
        ca=True,
        sans=None,
        days=3650,
        not_before=NOW - 400 * DAY,
    )


def intermediate(
    parent: Issued,
    cn: str = "Test Intermediate CA",
    o: str | None = "Test PKI",
    key: PrivateKeyTypes | None = None,
) -> Issued:
    return make_cert(
        name(cn, o),
        issuer=parent,
        key=key or ec_key(n=101),
        ca=True,
        sans=None,
        days=1825,
        not_before=NOW - 300 * DAY,
    )


def leaf(parent: Issued, cn: str = "www.example.org", **kw: object) -> Issued:
    kw.setdefault("key", ec_key(n=102))
    return make_cert(name(cn), issuer=parent, **kw)  # type: ignore[arg-type]


_RSA_OIDS = {
    "sha256": bytes.fromhex("2a864886f70d01010b"),
    "sha1": bytes.fromhex("2a864886f70d010105"),
    "md5": bytes.fromhex("2a864886f70d010104"),
}


def resign_legacy(
    cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey, digest: str
) -> x509.Certificate:
    """Re-sign an RSA/SHA-256-signed certificate with SHA-1 or MD5 (cryptography won't)."""
    old, new = _RSA_OIDS["sha256"], _RSA_OIDS[digest]
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(old) >= 1
    tbs = tbs.replace(old, new, 1)
    algo = hashes.SHA1() if digest == "sha1" else hashes.MD5()
    sig = issuer_key.sign(tbs, padding.PKCS1v15(), algo)
    alg_id = b"\x30\x0d\x06\x09" + new + b"\x05\x00"
    bits = b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    body = tbs + alg_id + bits
    der = b"\x30" + _der_len(len(body)) + body
    return x509.load_der_x509_certificate(der)


def pem(*certs: x509.Certificate | Issued) -> bytes:
    out = b""
    for c in certs:
        cert = c.cert if isinstance(c, Issued) else c
        out += cert.public_bytes(serialization.Encoding.PEM)
    return out


@dataclass(frozen=True)
class PKI:
    """A small public-looking hierarchy: root (in the test trust store), intermediate, leaf."""

    root: Issued
    inter: Issued
    leaf: Issued

    def store_file(self, tmp_path: object) -> str:
        from pathlib import Path

        path = Path(str(tmp_path)) / "trust.pem"
        path.write_bytes(self.root.pem)
        return str(path)
