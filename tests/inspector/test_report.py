"""Renderers: JSON lines equals the documented object; text, CSV and Prometheus shapes."""

from __future__ import annotations

import json

from certman.inspector import ScanResult, Severity, TrustStore, inspect
from certman.inspector.report import (
    Filter,
    Summary,
    csv_rows,
    jsonl_line,
    prometheus_rows,
    render_result,
    render_text,
    result_dict,
)
from tests.inspector import factory as f


def _result(pki: f.PKI, store: TrustStore) -> ScanResult:
    expired = f.leaf(pki.inter, not_after=f.NOW - f.DAY, sans=None)
    return ScanResult("s", inspect(f.pem(expired, pki.inter, pki.root), now=f.NOW, store=store))


def test_jsonl_line_is_the_result_dict(pki: f.PKI, store: TrustStore) -> None:
    result = _result(pki, store)
    for _ in range(2):  # second time from the per-intermediate cache
        assert json.loads(jsonl_line(result)) == result_dict(result)
    # Byte for byte what json.dumps writes, with names that need escaping.
    odd = f.leaf(pki.inter, 'Zoë "quoted" \\ \x01\u2028 ☃', sans=("xn--bcher-kva.example", "a.b"))
    tricky = ScanResult('src "q" é\n', inspect(f.pem(odd, pki.inter), now=f.NOW, store=store))
    for item in (result, tricky):
        for _ in range(2):
            expected = json.dumps(result_dict(item), separators=(",", ":"), ensure_ascii=False)
            assert jsonl_line(item) == expected
    err = ScanResult("e", error="e: empty input", error_code="empty-input")
    assert json.loads(jsonl_line(err)) == {
        "source": "e",
        "status": "error",
        "error": "e: empty input",
        "error_code": "empty-input",
        "certificates": [],
        "findings": [],
    }


def test_filters(pki: f.PKI, store: TrustStore) -> None:
    result = _result(pki, store)
    rules = {x["rule"] for x in result_dict(result)["findings"]}
    assert {"expired", "no-san", "root-included"} <= rules
    high = Filter(min_severity=Severity.HIGH)
    assert {x["rule"] for x in result_dict(result, high)["findings"]} == {"expired"}
    only = Filter(only=frozenset({"no-san"}))
    assert {x["rule"] for x in json.loads(jsonl_line(result, only))["findings"]} == {"no-san"}
    assert Filter(expiring_within=0).selects(result)
    fresh = ScanResult("x", inspect(f.pem(pki.leaf, pki.inter), now=f.NOW, store=store))
    assert not Filter(expiring_within=5).selects(fresh)


def test_text_csv_prometheus_and_summary(pki: f.PKI, store: TrustStore) -> None:
    result = _result(pki, store)
    text = render_text(result)
    assert "(end entity)" in text and "CRITICAL expired" in text and "chain: #0 -> #1 -> #2" in text
    rows = csv_rows(result).splitlines()
    assert len(rows) == 3 and rows[0].startswith("s,ok,,0,") and "expired:critical" in rows[0]
    prom = prometheus_rows(result).splitlines()
    assert len(prom) == 3 and prom[0].startswith(
        'certman_certificate_expiry_timestamp_seconds{source="s"'
    )
    summary = Summary()
    summary.add(render_result(result, "table", Filter()))
    summary.add(render_result(ScanResult("e", error="x", error_code="y"), "table", Filter()))
    assert summary.failed(None) and summary.errors == 1 and summary.worst == Severity.CRITICAL
    assert "scanned 2 source(s): 1 ok, 1 error(s)" in summary.text()
    assert 'certman_scan_findings{rule="expired",severity="critical"} 1' in summary.prometheus()
