"""Valid bundles in every format the inspector reads, and ways to break them.

Shared by the hypothesis tests and ``benchmarks/fuzz_loaders.py``: the
seeds are real certificates (made here with ``cryptography``), so mutations
land near the parsers' interesting paths instead of being rejected at byte 0.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
PASSWORD = b"hunter2"


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    password: bytes | None = None


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    ca: bool,
    san: str | None = None,
    hash_: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=10))
        .not_valid_after(NOW + dt.timedelta(days=80))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key, hash_ or hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def build_seeds() -> list[Seed]:
    """One valid input per format and variant (about 20 ms to build)."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # weak on purpose
    root = _cert("Hostile Root", root_key, "Hostile Root", root_key, ca=True)
    inter = _cert("Hostile Intermediate", inter_key, "Hostile Root", root_key, ca=True)
    leaf = _cert(
        "www.example.org",
        leaf_key,
        "Hostile Intermediate",
        inter_key,
        ca=False,
        san="www.example.org",
    )
    weak = _cert(
        "weak.example.org",
        rsa_key,
        "Hostile Intermediate",
        inter_key,
        ca=False,
        san="weak.example.org",
    )
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    enc_key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    der = leaf.public_bytes(serialization.Encoding.DER)
    trusted = (
        b"-----BEGIN TRUSTED CERTIFICATE-----\n"
        + base64.encodebytes(root.public_bytes(serialization.Encoding.DER) + b"\x30\x00")
        + b"-----END TRUSTED CERTIFICATE-----\n"
    )
    p12_plain = pkcs12.serialize_key_and_certificates(
        b"leaf", leaf_key, leaf, [inter, root], serialization.NoEncryption()
    )
    p12_pw = pkcs12.serialize_key_and_certificates(
        b"leaf", leaf_key, leaf, [inter], serialization.BestAvailableEncryption(PASSWORD)
    )
    p7_der = pkcs7.serialize_certificates([leaf, inter, root], serialization.Encoding.DER)
    p7_pem = pkcs7.serialize_certificates([leaf, inter], serialization.Encoding.PEM)
    return [
        Seed("pem-chain", _pem(leaf, inter, root)),
        Seed("pem-text-between", b"subject=...\n" + _pem(leaf) + b"\njunk\n" + _pem(inter)),
        Seed("pem-with-key", key_pem + _pem(leaf, inter)),
        Seed("pem-encrypted-key", enc_key_pem + _pem(leaf), PASSWORD),
        Seed("pem-weak-sha1", _pem(weak) + _pem(inter)),
        Seed("trusted-certificate", trusted),
        Seed("der", der),
        Seed("pkcs7-der", p7_der),
        Seed("pkcs7-pem", p7_pem),
        Seed("pkcs12", p12_plain),
        Seed("pkcs12-password", p12_pw, PASSWORD),
    ]


# -- ASN.1 bombs ----------------------------------------------------------------


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def nested_sequences(depth: int, inner: bytes = b"\x05\x00") -> bytes:
    """``depth`` SEQUENCEs inside each other, with correct definite lengths."""
    # Built from the inside out as a list of headers: concatenating in the loop
    # would copy the growing body every time (quadratic at 200,000 levels).
    headers: list[bytes] = []
    length = len(inner)
    for _ in range(depth):
        header = b"\x30" + der_length(length)
        headers.append(header)
        length += len(header)
    headers.reverse()
    return b"".join(headers) + inner


def nested_indefinite(depth: int) -> bytes:
    """``depth`` indefinite-length (BER) SEQUENCEs, properly closed."""
    return b"\x30\x80" * depth + b"\x05\x00" + b"\x00\x00" * depth


def lying_length(claimed: int = 2**62) -> bytes:
    """A SEQUENCE header claiming ``claimed`` bytes, followed by a few."""
    return b"\x30" + der_length(claimed) + b"\x02\x01\x03" + b"\x00" * 64


def pem_wrap(der: bytes, label: str = "CERTIFICATE") -> bytes:
    return (
        f"-----BEGIN {label}-----\n".encode()
        + base64.encodebytes(der)
        + f"-----END {label}-----\n".encode()
    )
