"""The real ``certman`` process: inspect and scan, formats, filters, exit statuses."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inspector import factory as f


def certman(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certman", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fleet(pki: f.PKI, tmp_path: Path) -> Path:
    d = tmp_path / "fleet"
    (d / "sub").mkdir(parents=True)
    (d / "good.pem").write_bytes(f.pem(pki.leaf, pki.inter))
    (d / "sub" / "good.der").write_bytes(pki.leaf.der)  # missing intermediate: high
    expired = f.leaf(pki.inter, not_after=f.NOW - f.DAY)
    (d / "sub" / "expired.pem").write_bytes(f.pem(expired, pki.inter))
    (d / "sub" / "junk.pem").write_bytes(b"junk")
    return d


def test_scan_jsonl_schema_and_exit_status(fleet: Path, store_file: str) -> None:
    proc = certman(
        "scan", str(fleet), "--format", "jsonl", "--trust-store", store_file, "--workers", "2"
    )
    assert proc.returncode == 1, proc.stderr
    objs = {Path(o["source"]).name: o for o in map(json.loads, proc.stdout.splitlines())}
    assert set(objs) == {"good.pem", "good.der", "expired.pem", "junk.pem"}
    good = objs["good.pem"]
    assert good["status"] == "ok" and good["error"] is None and good["findings"] == []
    cert = good["certificates"][0]
    for key in (
        "subject",
        "issuer",
        "serial",
        "sha256",
        "not_before",
        "not_after",
        "key",
        "signature_hash",
    ):
        assert key in cert
    assert cert["not_after"].endswith("Z") and cert["key"] == "EC-P-256"
    assert objs["junk.pem"]["status"] == "error" and objs["junk.pem"]["error"]
    (finding,) = objs["expired.pem"]["findings"]
    assert finding == {
        "rule": "expired",
        "severity": "critical",
        "message": finding["message"],
        "cert": 0,
    }
    assert [x["rule"] for x in objs["good.der"]["findings"]] == ["missing-intermediate"]
    assert proc.stderr == ""  # no progress when stderr is not a TTY


def test_scan_exit_zero_when_clean_and_fail_on(pki: f.PKI, tmp_path: Path, store_file: str) -> None:
    (tmp_path / "ok.pem").write_bytes(f.pem(pki.leaf, pki.inter, pki.root))  # root-included: low
    proc = certman("scan", str(tmp_path / "ok.pem"), "--trust-store", store_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "root-included" in proc.stdout and "scanned 1 source(s): 1 ok, 0 error(s)" in proc.stdout
    proc = certman(
        "scan", str(tmp_path / "ok.pem"), "--trust-store", store_file, "--fail-on", "low"
    )
    assert proc.returncode == 1
    proc = certman(
        "scan", str(tmp_path / "ok.pem"), "--trust-store", store_file, "--min-severity", "medium"
    )
    assert proc.returncode == 0 and "root-included" not in proc.stdout


def test_scan_usage_errors_exit_2(fleet: Path) -> None:
    assert certman("scan", str(fleet), "--format", "xml").returncode == 2
    assert certman("scan", str(fleet), "--only", "no-such-rule").returncode == 2
    assert certman("scan", str(fleet), "--distrust", "nonsense").returncode == 2
    assert certman("scan").returncode == 2


def test_scan_table_only_and_csv(fleet: Path, store_file: str) -> None:
    proc = certman("scan", str(fleet), "--trust-store", store_file, "--only", "expired")
    assert "expired.pem" in proc.stdout and "missing-intermediate" not in proc.stdout
    assert "findings: critical 1" in proc.stdout and "1 error(s)" in proc.stdout
    proc = certman("scan", str(fleet), "--trust-store", store_file, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert {Path(r["source"]).name for r in rows} == {
        "good.pem",
        "good.der",
        "expired.pem",
        "junk.pem",
    }
    assert any(r["findings"] == "expired:critical" for r in rows)


def test_scan_expiring_within_and_prometheus(pki: f.PKI, tmp_path: Path, store_file: str) -> None:
    soon = f.leaf(pki.inter, not_before=f.NOW - 80 * f.DAY, days=90)
    tmp_path = tmp_path / "certs"
    tmp_path.mkdir()
    (tmp_path / "soon.pem").write_bytes(f.pem(soon, pki.inter))
    (tmp_path / "later.pem").write_bytes(f.pem(pki.leaf, pki.inter))
    proc = certman(
        "scan", str(tmp_path), "--trust-store", store_file, "--expiring-within", "14",
        "--format", "jsonl",
    )  # fmt: skip
    objs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [Path(o["source"]).name for o in objs] == ["soon.pem"]
    assert objs[0]["findings"][0]["rule"] == "expiring-soon"
    proc = certman("scan", str(tmp_path), "--trust-store", store_file, "--format", "prometheus")
    assert "# TYPE certman_certificate_expiry_timestamp_seconds gauge" in proc.stdout
    assert 'certman_scan_sources{status="ok"} 2' in proc.stdout


def test_scan_stdin_json_lines(pki: f.PKI, store_file: str) -> None:
    rows = [
        {"id": "cust-1", "pem": f.pem(pki.leaf, pki.inter).decode()},
        {"id": "cust-2", "pem": "garbage"},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    proc = certman("scan", "-", "--format", "jsonl", "--trust-store", store_file, stdin=data)
    objs = {o["source"]: o for o in map(json.loads, proc.stdout.splitlines())}
    assert objs["cust-1"]["status"] == "ok" and objs["cust-2"]["status"] == "error"
    assert proc.returncode == 1


def test_scan_distrust_flag(pki: f.PKI, tmp_path: Path, store_file: str) -> None:
    tmp_path = tmp_path / "certs"
    tmp_path.mkdir()
    (tmp_path / "c.pem").write_bytes(f.pem(pki.leaf, pki.inter))
    proc = certman(
        "scan", str(tmp_path), "--trust-store", store_file, "--distrust", "O=Test PKI",
        "--format", "jsonl",
    )  # fmt: skip
    (obj,) = map(json.loads, proc.stdout.splitlines())
    assert [x["rule"] for x in obj["findings"]] == ["distrusted-ca"]
    assert proc.returncode == 1


def test_inspect_text_json_key_host(pki: f.PKI, tmp_path: Path, store_file: str) -> None:
    chain = tmp_path / "fullchain.pem"
    chain.write_bytes(f.pem(pki.leaf, pki.inter))
    key = tmp_path / "privkey.pem"
    key.write_bytes(pki.leaf.key_pem)
    proc = certman("inspect", str(chain), "--key", str(key), "--host", "www.example.org",
                   "--trust-store", store_file)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CN=www.example.org (end entity)" in proc.stdout and "findings: none" in proc.stdout
    other = tmp_path / "other.pem"
    other.write_bytes(f.ec_key(n=9).private_bytes(
        f.serialization.Encoding.PEM, f.serialization.PrivateFormat.PKCS8,
        f.serialization.NoEncryption(),
    ))  # fmt: skip
    proc = certman("inspect", str(chain), "--key", str(other), "--host", "x.example",
                   "--trust-store", store_file, "--json")  # fmt: skip
    assert proc.returncode == 1
    (doc,) = json.loads(proc.stdout)
    assert {x["rule"] for x in doc["findings"]} == {"key-mismatch", "hostname-mismatch"}
    assert doc["chain"]["links"][0]["status"] == "ok"


def test_inspect_unreadable_file_exit_1(tmp_path: Path) -> None:
    proc = certman("inspect", str(tmp_path / "missing.pem"))
    assert proc.returncode == 1 and "file-unreadable" in proc.stdout
