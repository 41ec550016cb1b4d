"""Property-based tests of the inspector's loaders on hostile input.

The property: for ANY bytes, ``load_bundle`` either returns a bundle with at
least one certificate or raises :class:`InspectorError` (a ``CertmanError``
with a code); and ``inspect`` of whatever loaded raises nothing else either.
Nothing else may escape: a fleet scan must turn one odd file into one error
result, and a library caller must be able to rely on ``except CertmanError``.

Inputs are random bytes, random PEM framing, mutations of real bundles in
every format (bit flips, splices, truncations, length rewrites), and ASN.1
bombs (deep nesting, lying lengths).
"""

from __future__ import annotations

import base64
import functools
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certman.errors import CertmanError, InspectorError
from certman.inspector import inspect, load_bundle
from certman.inspector.chain import TrustStore

from .corpus import (
    NOW,
    PASSWORD,
    Seed,
    build_seeds,
    lying_length,
    nested_indefinite,
    nested_sequences,
    pem_wrap,
)

# HOSTILE_EXAMPLES raises the budget for a long local hunt (default 250 per test).
SETTINGS = settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@functools.cache
def seeds() -> tuple[Seed, ...]:
    return tuple(build_seeds())


@functools.cache
def empty_store() -> TrustStore:
    # An empty trust store: inspection must still work (every chain is then
    # "untrusted"), and no certifi bundle has to be parsed per example.
    return TrustStore(())


def check(data: bytes, password: bytes | None = None) -> str:
    """Load and inspect; return "ok" or the error code. Fails on anything else."""
    try:
        bundle = load_bundle(data, source="<hostile>", password=password)
    except InspectorError as exc:
        assert exc.code and exc.code == exc.code.lower(), exc.code
        assert exc.message
        return exc.code
    except CertmanError as exc:  # pragma: no cover - a wrong layer, still caught
        pytest.fail(f"load_bundle raised {type(exc).__name__} ({exc.code}), not InspectorError")
    assert bundle.certificates, "a bundle without certificates must be an error"
    try:
        report = inspect(bundle, now=NOW, store=empty_store())
    except InspectorError as exc:
        return exc.code
    assert report is not None
    return "ok"


# -- strategies -----------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    seed = draw(st.sampled_from(seeds()))
    data = bytearray(seed.data)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "len"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x30, 0x80, 0x81, 0x84, 0xFF, 0x7F]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 256)))
            data[j:j] = data[i:j]
        else:  # rewrite a length byte into a long form claiming a lot
            data[i : i + 1] = b"\x84\x7f\xff\xff\xff"
    password = draw(st.sampled_from([seed.password, None, b"", b"wrong"]))
    return bytes(data), password


@st.composite
def mutated_pem_body(draw: st.DrawFn) -> bytes:
    """Valid PEM framing around a mutated DER body (the parser sees the damage)."""
    seed = draw(st.sampled_from([s for s in seeds() if s.name in ("der", "pkcs7-der")]))
    der = bytearray(seed.data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(der) - 1))
        der[i] = draw(st.integers(0, 255))
    label = draw(
        st.sampled_from(["CERTIFICATE", "TRUSTED CERTIFICATE", "PKCS7", "X509 CERTIFICATE"])
    )
    return pem_wrap(bytes(der), label)


LABELS = st.sampled_from(
    [
        "CERTIFICATE",
        "TRUSTED CERTIFICATE",
        "X509 CERTIFICATE",
        "PKCS7",
        "CMS",
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "CERTIFICATE REQUEST",
        "X",
    ]
)


@st.composite
def pem_soup(draw: st.DrawFn) -> bytes:
    """Random blocks: random labels, bodies of random bytes or junk, missing ENDs."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        label = draw(LABELS).encode()
        body = draw(
            st.one_of(st.binary(max_size=300).map(base64.encodebytes), st.binary(max_size=80))
        )
        end = draw(st.sampled_from([label, b"CERTIFICATE", b""]))
        parts.append(b"-----BEGIN " + label + b"-----\n" + body)
        if end:
            parts.append(b"-----END " + end + b"-----\n")
        parts.append(draw(st.binary(max_size=20)))
    return b"".join(parts)


# -- properties -------------------------------------------------------------------


def test_every_seed_loads() -> None:
    """The corpus is valid: otherwise the mutations below would prove little."""
    for seed in seeds():
        assert check(seed.data, seed.password) == "ok", seed.name


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(data)


@SETTINGS
@given(st.binary(max_size=512).map(lambda b: b"\x30" + b))
def test_random_der_like(data: bytes) -> None:
    check(data)
    check(data, PASSWORD)


@SETTINGS
@given(mutated())
def test_mutated_bundles(case: tuple[bytes, bytes | None]) -> None:
    check(*case)


@SETTINGS
@given(mutated_pem_body())
def test_valid_pem_around_damaged_der(data: bytes) -> None:
    check(data)


@SETTINGS
@given(pem_soup())
def test_pem_soup(data: bytes) -> None:
    check(data)


@SETTINGS
@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    try:
        bundle = load_bundle(text)
    except InspectorError:
        return
    assert bundle.certificates


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(1, 3000), st.booleans(), st.booleans())
def test_nested_asn1(depth: int, indefinite: bool, as_pem: bool) -> None:
    der = nested_indefinite(depth) if indefinite else nested_sequences(depth)
    check(pem_wrap(der) if as_pem else der)


@pytest.mark.parametrize("claimed", [2**31, 2**32 + 5, 2**62, 2**1000 - 1])
def test_lying_lengths(claimed: int) -> None:
    assert check(lying_length(claimed)) != "ok"
    assert check(pem_wrap(lying_length(claimed))) != "ok"


def test_unsupported_key_algorithm_is_an_inspector_error() -> None:
    """Regression: a key with an unknown algorithm OID raised UnsupportedAlgorithm."""
    from cryptography.hazmat.primitives.asymmetric import x448

    der = x448.X448PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    unknown = der.replace(bytes.fromhex("06032b656f"), bytes.fromhex("06032b6577"))
    assert unknown != der
    assert check(unknown) == "unrecognised-input"
    good = seeds()[0].data
    assert check(pem_wrap(unknown, "PRIVATE KEY") + good) == "ok"
    bundle = load_bundle(pem_wrap(unknown, "PRIVATE KEY") + good)
    assert any("Unknown key type" in p for p in bundle.problems)


def test_truncated_block_does_not_swallow_the_next_one() -> None:
    """Regression of the PEM scanner: a BEGIN without END before a whole block."""
    good = seeds()[0].data
    first = good.split(b"-----END CERTIFICATE-----")[0][:200]
    bundle = load_bundle(first + b"\n" + good)
    assert len(bundle.certificates) == 3
    assert any("truncated" in p for p in bundle.problems)


def test_invalid_x509_version_is_an_inspector_error() -> None:
    """Regression: version 2 (v1=0, v3=2; 1 is v2, 3+ invalid) raised x509.InvalidVersion."""
    der = next(s.data for s in seeds() if s.name == "der")
    bad = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1)
    assert bad != der
    assert check(bad) == "unrecognised-input"
    assert check(pem_wrap(bad)) == "no-certificate"
    assert check(pem_wrap(bad) + seeds()[0].data) == "ok"


def test_unreadable_leaf_key_with_a_private_key_is_a_finding() -> None:
    """Regression: key-mismatch raised ValueError when the leaf's public key is malformed."""
    seed = next(s for s in seeds() if s.name == "pem-with-key")
    key_block, _, certs = seed.data.partition(b"-----END PRIVATE KEY-----\n")
    leaf_der = load_bundle(certs).certificates[0].public_bytes(serialization.Encoding.DER)
    # The EC point starts 03 42 00 04 (BIT STRING, uncompressed point): make it 05.
    bad_der = leaf_der.replace(b"\x03\x42\x00\x04", b"\x03\x42\x00\x05", 1)
    assert bad_der != leaf_der
    data = key_block + b"-----END PRIVATE KEY-----\n" + pem_wrap(bad_der)
    bundle = load_bundle(data)
    report = inspect(bundle, now=NOW, store=empty_store())
    assert "key-mismatch" in {f.rule for f in report.findings}


def test_pkcs7_block_with_invalid_certificate_version() -> None:
    """Regression (found by benchmarks/fuzz_loaders.py): InvalidVersion escaped a PKCS7 block."""
    der = next(s.data for s in seeds() if s.name == "pkcs7-der")
    bad = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x16", 1)
    assert bad != der
    assert check(pem_wrap(bad, "PKCS7")) == "no-certificate"


def test_ber_pkcs7_and_pkcs12_load_without_warnings() -> None:
    """Regression: trailing data makes cryptography fall back to BER with a UserWarning,
    which the library must not show (pytest turns warnings into errors here)."""
    for name in ("pkcs7-der", "pkcs12"):
        seed = next(s for s in seeds() if s.name == name)
        check(seed.data + b"\x00", seed.password)


def test_duplicate_extension_is_an_inspector_error() -> None:
    """Regression (found by the atheris run): x509.DuplicateExtension escaped load_bundle."""
    der = next(s.data for s in seeds() if s.name == "der")
    # The leaf's BasicConstraints extension renamed to a second SubjectAltName.
    bad = der.replace(b"\x06\x03\x55\x1d\x13\x01\x01\xff", b"\x06\x03\x55\x1d\x11\x01\x01\xff", 1)
    assert bad != der
    assert check(bad) == "unrecognised-input"
    check(pem_wrap(bad))


def test_name_attribute_type_cryptography_refuses() -> None:
    """Regression (found by the atheris run): a BIT STRING attribute under an OID
    other than x500UniqueIdentifier made cryptography's Name raise TypeError."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "odd.example"),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\x01", _ASN1Type.BitString),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"\x06\x03\x55\x04\x2d\x03", b"\x06\x03\x55\x04\x03\x03")  # OID -> CN
    assert bad != der
    assert check(bad) == "unrecognised-input"
    check(pem_wrap(bad))
    check(
        pkcs7.serialize_certificates(
            [x509.load_der_x509_certificate(bad)], serialization.Encoding.DER
        )
    )
