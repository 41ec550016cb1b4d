"""Loading every supported format, and every kind of bad input."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from certman.errors import InspectorError
from certman.inspector import inspect, load_bundle, load_file
from tests.inspector import factory as f


def test_pem_many_certificates_with_text_between(pki: f.PKI) -> None:
    data = b"subject=whatever\n" + pki.leaf.pem + b"garbage line\n\n" + pki.inter.pem + b"trailer"
    bundle = load_bundle(data, source="x.pem")
    assert [c.subject for c in bundle.certificates] == [
        pki.leaf.cert.subject,
        pki.inter.cert.subject,
    ]
    assert bundle.format == "pem" and bundle.problems == () and bundle.source == "x.pem"


def test_trusted_certificate_block_with_aux_data(pki: f.PKI) -> None:
    body = base64.encodebytes(pki.root.der + b"\x30\x03\x0c\x01x").decode()
    data = f"-----BEGIN TRUSTED CERTIFICATE-----\n{body}-----END TRUSTED CERTIFICATE-----\n"
    assert load_bundle(data).certificates[0] == pki.root.cert


def test_der(pki: f.PKI) -> None:
    bundle = load_bundle(pki.leaf.der)
    assert bundle.format == "der" and bundle.certificates == (pki.leaf.cert,)


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_pkcs7(pki: f.PKI, encoding: serialization.Encoding) -> None:
    data = pkcs7.serialize_certificates([pki.leaf.cert, pki.inter.cert], encoding)
    bundle = load_bundle(data)
    assert bundle.format == "pkcs7"
    assert set(bundle.certificates) == {pki.leaf.cert, pki.inter.cert}


def _p12(pki: f.PKI, password: bytes | None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"x", pki.leaf.key, pki.leaf.cert, [pki.inter.cert], enc
    )


def test_pkcs12_without_password(pki: f.PKI) -> None:
    bundle = load_bundle(_p12(pki, None))
    assert bundle.format == "pkcs12"
    assert bundle.certificates == (pki.leaf.cert, pki.inter.cert)
    assert len(bundle.keys) == 1


def test_pkcs12_with_password(pki: f.PKI) -> None:
    bundle = load_bundle(_p12(pki, b"s3cret"), password=b"s3cret")
    assert bundle.certificates[0] == pki.leaf.cert and len(bundle.keys) == 1


@pytest.mark.parametrize("password", [None, b"wrong"])
def test_pkcs12_wrong_or_missing_password(pki: f.PKI, password: bytes | None) -> None:
    with pytest.raises(InspectorError) as err:
        load_bundle(_p12(pki, b"s3cret"), password=password)
    assert err.value.code == "pkcs12-password"


def test_private_key_recognised_and_used(pki: f.PKI) -> None:
    bundle = load_bundle(pki.leaf.pem + pki.leaf.key_pem + pki.inter.pem)
    assert len(bundle.keys) == 1 and len(bundle.certificates) == 2


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty-input"),
        (b"  \n\t", "empty-input"),
        (os.urandom(64), "unrecognised-input"),
        (b"\x30\x82\x01\x00" + b"\x00" * 40, "unrecognised-input"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "truncated-pem"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "no-certificate"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "no-certificate",
        ),
    ],
)
def test_bad_input_is_one_clear_error(data: bytes, code: str) -> None:
    with pytest.raises(InspectorError) as err:
        load_bundle(data, source="in")
    assert err.value.code == code
    assert str(err.value).startswith("in:")


def test_random_bytes_never_crash() -> None:
    for n in range(200):
        data = os.urandom(n % 97 + 1)
        with contextlib.suppress(InspectorError):
            load_bundle(data)


def test_truncated_block_after_a_good_certificate_is_a_parse_error_finding(pki: f.PKI) -> None:
    data = pki.leaf.pem + pki.inter.pem[:200]
    bundle = load_bundle(data)
    assert len(bundle.certificates) == 1 and bundle.problems
    report = inspect(bundle, now=f.NOW)
    assert "parse-error" in {x.rule for x in report.findings}


def test_oversize_and_unreadable_files(tmp_path: Path, pki: f.PKI) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(pki.leaf.pem * 10)
    with pytest.raises(InspectorError) as err:
        load_file(big, max_size=1000)
    assert err.value.code == "file-too-large"
    assert load_file(big).certificates
    with pytest.raises(InspectorError) as err:
        load_file(tmp_path / "missing.pem")
    assert err.value.code == "file-unreadable"


def test_pem_bundles_share_intermediate_objects_and_keep_der(pki: f.PKI) -> None:
    one = load_bundle(pki.leaf.pem + pki.inter.pem)
    two = load_bundle(f.leaf(pki.inter, "other.example").pem + pki.inter.pem)
    assert one.certificates[1] is two.certificates[1]  # parsed once per process
    assert one.certificates[1] == pki.inter.cert
    assert one.der(0) == pki.leaf.der and one.der(1) == pki.inter.der
    # In the wrong order too: the intermediate first is the shared object.
    reverse = load_bundle(pki.inter.pem + pki.leaf.pem)
    assert reverse.certificates[0] is one.certificates[1]
    from certman.inspector import load as load_module

    assert pki.leaf.pem.split(b"-----")[2] not in load_module._PEM_CACHE  # leaves are not kept
    assert pki.inter.pem.split(b"-----")[2] in load_module._PEM_CACHE
    assert load_bundle(pki.leaf.der).der(0) == pki.leaf.der
    # A bundle rebuilt with other certificates does not hand out stale DER.
    from dataclasses import replace

    swapped = replace(one, certificates=(one.certificates[1], one.certificates[0]))
    assert swapped.der(0) is None and swapped.der(1) is None


def test_reads_are_capped_for_pipes_too(tmp_path: Path, pki: f.PKI) -> None:
    import threading

    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as fh:
            fh.write(pki.leaf.pem * 100)

    writer = threading.Thread(target=feed)
    writer.start()
    with pytest.raises(InspectorError) as err:
        load_file(fifo, max_size=5000)
    writer.join()
    assert err.value.code == "file-too-large"
    writer = threading.Thread(target=feed)
    writer.start()
    assert len(load_file(fifo).certificates) == 100
    writer.join()


def test_quiet_hides_cryptography_warnings_and_restores_filters() -> None:
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    from certman.inspector.load import quiet

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            with quiet():  # nested (a worker's chunk around load_bundle/inspect)
                warnings.warn("negative serial", CryptographyDeprecationWarning, stacklevel=1)
            warnings.warn("could not be parsed as DER, BER used", UserWarning, stacklevel=1)
        warnings.warn("shown again", CryptographyDeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["shown again"]
    assert warnings.filters == before


def test_quiet_is_per_thread() -> None:
    import threading
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    from certman.inspector.load import quiet

    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with quiet():
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    inside.wait(10)
    # Another thread inside quiet() does not make this thread's quiet() a no-op.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn("negative serial", CryptographyDeprecationWarning, stacklevel=1)
    leave.set()
    other.join()
    assert seen == []
