"""Every rule id: a case where it fires and one where it does not."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from certman.inspector import RULES, Bundle, Severity, TrustStore, inspect, load_bundle
from certman.inspector.model import Report
from tests.inspector import factory as f

DAY = f.DAY
NOW = f.NOW


def run(data: bytes | Bundle, store: TrustStore, **kw: object) -> Report:
    kw.setdefault("now", NOW)
    return inspect(data, store=store, **kw)  # type: ignore[arg-type]


def fired(report: Report, rule: str) -> list[int | None]:
    return [x.cert for x in report.findings if x.rule == rule]


def test_every_rule_has_severity_summary_and_fix() -> None:
    expected = {
        "expired", "not-yet-valid", "expiring-soon", "weak-signature-hash", "weak-key",
        "distrusted-ca", "chain-order", "missing-intermediate", "bad-signature",
        "root-included", "extra-cert", "untrusted-root", "hostname-mismatch",
        "key-mismatch", "no-san", "validity-too-long", "parse-error",
    }  # fmt: skip
    assert expected <= set(RULES)
    for r in RULES.values():
        assert isinstance(r.severity, Severity) and r.summary and r.fix


def test_clean_chain_has_no_findings(pki: f.PKI, store: TrustStore) -> None:
    report = run(f.pem(pki.leaf, pki.inter), store, host="www.example.org")
    assert report.findings == ()
    assert report.chain.trusted and report.chain.path == (0, 1)


# --- validity


def test_expired_any_certificate_with_index(pki: f.PKI, store: TrustStore) -> None:
    old_inter = f.make_cert(
        pki.inter.cert.subject, issuer=pki.root, key=pki.inter.key, ca=True, sans=None,
        not_before=NOW - 400 * DAY, days=300,
    )  # fmt: skip
    report = run(f.pem(pki.leaf, old_inter), store)
    assert fired(report, "expired") == [1]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "expired") == []
    expired_leaf = f.leaf(pki.inter, not_after=NOW - DAY)
    assert fired(run(f.pem(expired_leaf, pki.inter), store), "expired") == [0]


def test_not_yet_valid(pki: f.PKI, store: TrustStore) -> None:
    future = f.leaf(pki.inter, not_before=NOW + DAY)
    assert fired(run(f.pem(future, pki.inter), store), "not-yet-valid") == [0]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "not-yet-valid") == []


def test_expiring_soon_threshold(pki: f.PKI, store: TrustStore) -> None:
    soon = f.leaf(pki.inter, not_before=NOW - 80 * DAY, days=90)  # 10 days left
    assert fired(run(f.pem(soon, pki.inter), store), "expiring-soon") == [0]
    later = f.leaf(pki.inter, not_before=NOW - 10 * DAY, days=90)  # 80 days left
    assert fired(run(f.pem(later, pki.inter), store), "expiring-soon") == []
    assert fired(run(f.pem(later, pki.inter), store, expiring_days=81), "expiring-soon") == [0]
    expired = f.leaf(pki.inter, not_after=NOW - DAY)
    assert fired(run(f.pem(expired, pki.inter), store), "expiring-soon") == []


@pytest.mark.parametrize(
    ("not_before", "days", "fires"),
    [
        (dt.datetime(2021, 1, 1, tzinfo=dt.UTC), 400, True),
        (dt.datetime(2021, 1, 1, tzinfo=dt.UTC), 397, False),
        (dt.datetime(2019, 1, 1, tzinfo=dt.UTC), 800, False),
        (dt.datetime(2019, 1, 1, tzinfo=dt.UTC), 830, True),
        (dt.datetime(2017, 1, 1, tzinfo=dt.UTC), 1000, False),
        (dt.datetime(2026, 4, 1, tzinfo=dt.UTC), 300, True),
        (dt.datetime(2026, 4, 1, tzinfo=dt.UTC), 199, False),
        (dt.datetime(2027, 4, 1, tzinfo=dt.UTC), 101, True),
        (dt.datetime(2029, 4, 1, tzinfo=dt.UTC), 48, True),
        (dt.datetime(2029, 4, 1, tzinfo=dt.UTC), 46, False),
    ],
)
def test_validity_too_long(
    pki: f.PKI, store: TrustStore, not_before: dt.datetime, days: int, fires: bool
) -> None:
    cert = f.leaf(pki.inter, not_before=not_before, days=days)
    got = fired(run(f.pem(cert, pki.inter), store, now=not_before + DAY), "validity-too-long")
    assert got == ([0] if fires else [])


# --- keys and signatures


def test_weak_signature_hash_sha1_and_md5_but_not_a_roots_own(store: TrustStore) -> None:
    rk = f.rsa_key(2048)
    rsa_root = f.root("RSA Root", key=rk)
    own = TrustStore([rsa_root.cert])
    leaf = f.leaf(rsa_root)
    for digest in ("sha1", "md5"):
        weak = f.resign_legacy(leaf.cert, rk, digest)
        report = run(f.pem(weak, rsa_root), own)
        assert fired(report, "weak-signature-hash") == [0], digest
        assert fired(report, "bad-signature") == []
    assert fired(run(f.pem(leaf, rsa_root), own), "weak-signature-hash") == []
    sha1_root = f.resign_legacy(rsa_root.cert, rk, "sha1")
    report = run(f.pem(leaf.cert, sha1_root), TrustStore([sha1_root]))
    assert fired(report, "weak-signature-hash") == []


def test_weak_key_rsa_1024_and_odd_curve(pki: f.PKI, store: TrustStore) -> None:
    small = f.leaf(pki.inter, key=f.rsa_key(1024))
    assert fired(run(f.pem(small, pki.inter), store), "weak-key") == [0]
    k1 = f.leaf(pki.inter, key=f.ec_key("secp256k1"))
    report = run(f.pem(k1, pki.inter), store)
    assert fired(report, "weak-key") == [0]
    assert "secp256k1" in report.findings[0].message
    ok = f.leaf(pki.inter, key=f.rsa_key(2048))
    assert fired(run(f.pem(ok, pki.inter), store), "weak-key") == []
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "weak-key") == []


def test_key_mismatch(pki: f.PKI, store: TrustStore) -> None:
    good = run(f.pem(pki.leaf, pki.inter) + pki.leaf.key_pem, store)
    assert good.keys == 1 and fired(good, "key-mismatch") == []
    other = f.ec_key(n=7)
    bad = run(f.pem(pki.leaf, pki.inter), store, keys=[other])
    assert fired(bad, "key-mismatch") == [0]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "key-mismatch") == []


def test_bad_signature_same_name_other_key(pki: f.PKI, store: TrustStore) -> None:
    impostor = f.make_cert(
        pki.inter.cert.subject, issuer=pki.root, key=f.ec_key(n=55), ca=True, sans=None
    )
    report = run(f.pem(pki.leaf, impostor), store)
    assert fired(report, "bad-signature") == [0]
    assert report.chain.links[0].status == "bad-signature"
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "bad-signature") == []


def test_bad_signature_against_the_trust_store(pki: f.PKI) -> None:
    other_root = f.make_cert(pki.root.cert.subject, key=f.ec_key(n=56), ca=True, sans=None)
    report = run(f.pem(pki.leaf, pki.inter), TrustStore([other_root.cert]))
    assert fired(report, "bad-signature") == [1]


# --- chain


def test_chain_order(pki: f.PKI, store: TrustStore) -> None:
    report = run(f.pem(pki.inter, pki.leaf), store)
    assert fired(report, "chain-order") == [1]
    assert report.chain.leaf == 1 and report.chain.path == (1, 0)
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "chain-order") == []


def test_missing_intermediate(pki: f.PKI, store: TrustStore) -> None:
    report = run(f.pem(pki.leaf), store)
    assert fired(report, "missing-intermediate") == [0]
    assert fired(report, "untrusted-root") == []
    assert report.chain.links[0].status == "issuer-missing"
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "missing-intermediate") == []


def test_root_included(pki: f.PKI, store: TrustStore) -> None:
    assert fired(run(f.pem(pki.leaf, pki.inter, pki.root), store), "root-included") == [2]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "root-included") == []


def test_extra_cert(pki: f.PKI, store: TrustStore) -> None:
    stranger = f.leaf(f.root("Other Root", key=f.ec_key(n=60)), cn="other.example")
    report = run(f.pem(pki.leaf, pki.inter, stranger), store)
    assert fired(report, "extra-cert") == [2]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "extra-cert") == []
    other_root = f.root("Other Root", key=f.ec_key(n=60))
    ca_file = run(f.pem(pki.root, other_root), store)  # a trust-store file
    assert fired(ca_file, "extra-cert") == []


def test_untrusted_root(pki: f.PKI, store: TrustStore) -> None:
    empty = TrustStore([])
    report = run(f.pem(pki.leaf, pki.inter, pki.root), empty)
    assert fired(report, "untrusted-root") == [2]
    assert not report.chain.trusted and report.chain.complete
    assert fired(run(f.pem(pki.leaf, pki.inter, pki.root), store), "untrusted-root") == []
    selfsigned = f.make_cert(f.name("self.example"), key=f.ec_key(n=61))
    assert fired(run(selfsigned.pem, store), "untrusted-root") == [0]


def test_untrusted_root_default_store_is_certifi(pki: f.PKI) -> None:
    report = inspect(f.pem(pki.leaf, pki.inter, pki.root), now=NOW)
    assert fired(report, "untrusted-root") == [2]


# --- names


@pytest.mark.parametrize(
    ("host", "sans", "fires"),
    [
        ("www.example.org", ("www.example.org",), False),
        ("WWW.Example.ORG.", ("www.example.org",), False),
        ("other.example.org", ("www.example.org",), True),
        ("a.example.org", ("*.example.org",), False),
        ("a.b.example.org", ("*.example.org",), True),
        ("example.org", ("*.example.org",), True),
    ],
)
def test_hostname_mismatch(
    pki: f.PKI, store: TrustStore, host: str, sans: tuple[str, ...], fires: bool
) -> None:
    cert = f.leaf(pki.inter, sans=sans)
    got = fired(run(f.pem(cert, pki.inter), store, host=host), "hostname-mismatch")
    assert got == ([0] if fires else [])


def test_hostname_not_checked_without_host(pki: f.PKI, store: TrustStore) -> None:
    cert = f.leaf(pki.inter, sans=("a.example",))
    assert fired(run(f.pem(cert, pki.inter), store), "hostname-mismatch") == []


def test_no_san(pki: f.PKI, store: TrustStore) -> None:
    bare = f.leaf(pki.inter, sans=None)
    assert fired(run(f.pem(bare, pki.inter), store), "no-san") == [0]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "no-san") == []


def test_parse_error(pki: f.PKI, store: TrustStore) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    report = run(f.pem(pki.leaf, pki.inter) + broken, store)
    assert fired(report, "parse-error") == [None]
    assert fired(run(f.pem(pki.leaf, pki.inter), store), "parse-error") == []


def test_only_runs_selected_rules(pki: f.PKI, store: TrustStore) -> None:
    report = run(f.pem(pki.inter, pki.leaf, pki.root), store, rules=["root-included"])
    assert {x.rule for x in report.findings} == {"root-included"}


def test_findings_sorted_worst_first(pki: f.PKI, store: TrustStore) -> None:
    expired = f.leaf(pki.inter, not_after=NOW - DAY, sans=None)
    report = run(f.pem(expired, pki.inter, pki.root), store)
    sev = [x.severity for x in report.findings]
    assert sev == sorted(sev, reverse=True) and report.worst == Severity.CRITICAL


def test_rsa_key_facts(pki: f.PKI, store: TrustStore) -> None:
    cert = f.leaf(pki.inter, key=f.rsa_key(2048))
    report = run(load_bundle(f.pem(cert, pki.inter)), store)
    assert str(report.certificates[0].key) == "RSA-2048"
    assert isinstance(cert.key, rsa.RSAPrivateKey)


def test_docs_rule_table_lists_every_rule() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "inspector.md").read_text()
    for rule_id, r in RULES.items():
        assert f"| `{rule_id}` | {r.severity} |" in doc
