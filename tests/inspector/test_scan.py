"""The library scan: every kind of source, parallel workers, errors that do not stop it."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import certman
from certman.inspector import InspectOptions, RawChain, iter_sources, scan
from certman.inspector.sources import stdin_sources
from tests.inspector import factory as f


@dataclass
class Row:
    id: int
    pem: str


def test_scan_rows_of_every_shape(pki: f.PKI, store_file: str) -> None:
    chain = f.pem(pki.leaf, pki.inter)
    rows = [
        ("t-1", chain.decode()),
        {"id": "d-2", "pem": chain.decode()},
        Row(3, chain.decode()),
        chain,
        chain.decode(),
        ("bad", "not a certificate"),
    ]
    options = InspectOptions(trust_store=store_file)
    results = {r.source: r for r in certman.scan(rows, now=f.NOW, workers=1, options=options)}
    assert set(results) == {"t-1", "d-2", "3", "<bytes#3>", "<pem#4>", "bad"}
    assert all(results[k].ok and results[k].report.findings == () for k in ("t-1", "d-2", "3"))  # type: ignore[union-attr]
    assert results["bad"].status == "error" and results["bad"].error_code == "unrecognised-input"


def test_parallel_scan_of_a_tree_with_bad_files(
    pki: f.PKI, tmp_path: Path, store_file: str
) -> None:
    tree = tmp_path / "certs"
    (tree / "a" / "b").mkdir(parents=True)
    for n in range(30):
        (tree / "a" / f"{n}.pem").write_bytes(f.pem(pki.leaf, pki.inter))
    (tree / "a" / "b" / "empty.pem").write_bytes(b"")
    (tree / "a" / "b" / "junk.bin").write_bytes(b"\x00\x01garbage")
    (tree / "a" / "b" / "trunc.pem").write_bytes(pki.leaf.pem[:100])
    (tree / "big.pem").write_bytes(pki.leaf.pem * 50)
    unreadable = tree / "secret.pem"
    unreadable.write_bytes(pki.leaf.pem)
    unreadable.chmod(0)
    options = InspectOptions(trust_store=store_file, max_size=5000)
    results = list(scan([tree], now=f.NOW, workers=2, options=options))
    assert len(results) == 35
    errors = {Path(r.source).name: r.error_code for r in results if not r.ok}
    import os

    expected = {
        "empty.pem": "empty-input",
        "junk.bin": "unrecognised-input",
        "trunc.pem": "truncated-pem",
        "big.pem": "file-too-large",
    }
    if os.geteuid() != 0:  # root reads anything
        expected["secret.pem"] = "file-unreadable"
    assert {k: v for k, v in errors.items() if k in expected} == expected
    assert sum(1 for r in results if r.ok and not r.report.findings) >= 30  # type: ignore[union-attr]


def test_glob_and_missing_path(pki: f.PKI, tmp_path: Path) -> None:
    (tmp_path / "x.pem").write_bytes(pki.leaf.pem)
    (tmp_path / "y.txt").write_bytes(pki.leaf.pem)
    ids = [s.id for s in iter_sources([str(tmp_path / "*.pem"), str(tmp_path / "nope.pem")])]
    assert ids == [str(tmp_path / "x.pem"), str(tmp_path / "nope.pem")]


def test_stdin_json_lines_and_concatenated_pem(pki: f.PKI) -> None:
    chain = f.pem(pki.leaf, pki.inter).decode()
    lines = "\n".join(
        [json.dumps({"id": 7, "pem": chain}), "not json", json.dumps({"id": "x"}), ""]
    )
    sources = list(stdin_sources(io.BytesIO(lines.encode())))
    assert [s.id for s in sources] == ["7", "<stdin>:2", "<stdin>:3"]
    other = f.leaf(pki.inter, cn="b.example", sans=("b.example",))
    stream = io.BytesIO(f.pem(pki.leaf, pki.inter, other, pki.inter))
    groups = list(stdin_sources(stream))
    assert [s.id for s in groups] == ["<stdin>#1", "<stdin>#2"]
    results = list(scan(groups, now=f.NOW, workers=1))
    assert [len(r.report.certificates) for r in results] == [2, 2]  # type: ignore[union-attr]


@dataclass(frozen=True)
class HandshakeSource:
    """A plug-in source that hands over DER certificates as received, with a host."""

    id: str
    ders: tuple[bytes, ...]
    host: str

    def read(self) -> RawChain:
        return RawChain(ders=self.ders, host=self.host)


def test_pluggable_source_with_der_chain_and_host(pki: f.PKI, store_file: str) -> None:
    src = HandshakeSource("example:443", (pki.leaf.der, pki.inter.der), "other.example")
    options = InspectOptions(trust_store=store_file)
    (result,) = list(scan([src], now=f.NOW, workers=2, options=options))
    assert result.source == "example:443"
    assert [x.rule for x in result.report.findings] == ["hostname-mismatch"]  # type: ignore[union-attr]


def test_parallel_scan_from_a_threaded_process(pki: f.PKI, store_file: str) -> None:
    """With another thread alive the workers are not forked; results are the same."""
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        rows = [(f"r{n}", f.pem(pki.leaf, pki.inter)) for n in range(20)]
        options = InspectOptions(trust_store=store_file)
        results = list(scan(rows, now=f.NOW, workers=2, options=options))
    finally:
        stop.set()
        other.join()
    assert sorted(r.source for r in results) == sorted(f"r{n}" for n in range(20))
    assert all(r.ok and not r.report.findings for r in results)  # type: ignore[union-attr]


def test_scan_pkcs12_with_the_options_password(pki: f.PKI, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    data = pkcs12.serialize_key_and_certificates(
        b"x",
        pki.leaf.key,  # type: ignore[arg-type]
        pki.leaf.cert,
        [pki.inter.cert],
        serialization.BestAvailableEncryption(b"pw"),
    )
    (tmp_path / "site.p12").write_bytes(data)
    good = InspectOptions(password=b"pw")
    (ok,) = scan([tmp_path / "site.p12"], now=f.NOW, workers=1, options=good)
    assert ok.ok and ok.report.format == "pkcs12" and ok.report.keys == 1  # type: ignore[union-attr]
    (bad,) = scan([tmp_path / "site.p12"], now=f.NOW, workers=1, options=InspectOptions())
    assert bad.error_code == "pkcs12-password"
