"""ROCA fingerprint detection, and the distrust data and matching."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from certman.errors import ConfigError
from certman.inspector import (
    EVENTS,
    InspectOptions,
    TrustStore,
    inspect,
    load_distrust_file,
    user_event,
)
from certman.inspector.rules import ROCA_PRIMES, roca_vulnerable
from tests.inspector import factory as f

UTC = dt.UTC


def roca_like_modulus(bits: int = 2048) -> int:
    """A modulus that is a power of 65537 modulo every test prime (built by CRT)."""
    m = math.prod(ROCA_PRIMES)
    x = 0
    for k, p in enumerate(ROCA_PRIMES):
        residue = pow(65537, k + 3, p)
        mp = m // p
        x += residue * mp * pow(mp, -1, p)
    x %= m
    t = (1 << (bits - 1)) // m + 1
    n = x + m * t
    if n % 2 == 0:
        n += m  # m is odd, so this flips parity and keeps every residue
    return n


def test_roca_positive_vector() -> None:
    n = roca_like_modulus()
    assert n.bit_length() == 2048 and n % 2 == 1
    assert roca_vulnerable(n)


def test_roca_negative_normal_key() -> None:
    assert not roca_vulnerable(f.rsa_key(2048).public_key().public_numbers().n)
    assert not roca_vulnerable(roca_like_modulus() + 2)


def test_roca_weak_key_finding(pki: f.PKI, store: TrustStore) -> None:
    pub = rsa.RSAPublicNumbers(65537, roca_like_modulus()).public_key()
    cert = f.make_cert(f.name("roca.example"), issuer=pki.inter, public_key=pub)
    report = inspect(f.pem(cert, pki.inter), now=f.NOW, store=store)
    messages = [x.message for x in report.findings if x.rule == "weak-key"]
    assert messages and "ROCA" in messages[0]


# --- distrust


def distrusted(report: object) -> list[str]:
    return [x.message for x in report.findings if x.rule == "distrusted-ca"]  # type: ignore[attr-defined]


def chain_from(
    org: str, cn: str, *, not_before: dt.datetime, sct: tuple[dt.datetime, ...] = ()
) -> bytes:
    r = f.root(f"{cn} Root", o=org, key=f.ec_key(n=200))
    i = f.intermediate(r, cn=cn, o=org, key=f.ec_key(n=201))
    leaf = f.leaf(i, not_before=not_before, days=90, sct_times=sct)
    return f.pem(leaf, i)


def test_every_event_names_vendors_dates_and_sources() -> None:
    ids = {e.id for e in EVENTS}
    for needed in ("wosign-startcom-2016", "symantec-2018", "cnnic-2015", "camerfirma-2021",
                   "trustcor-2022", "etugra-2023", "globaltrust-2024", "entrust-2024",
                   "chunghwa-2025", "netlock-2025"):  # fmt: skip
        assert needed in ids
    for e in EVENTS:
        assert e.actions and e.references
        assert all(a.reference.startswith("https://") for a in e.actions)
    docs = (Path(__file__).parents[2] / "docs" / "distrust.md").read_text()
    for e in EVENTS:
        assert e.id in docs
        for ref in e.references:
            assert ref in docs


def test_startcom_by_issuer_organisation() -> None:
    data = chain_from(
        "StartCom Ltd.",
        "StartCom Class 1 DV Server CA",
        not_before=dt.datetime(2017, 3, 1, tzinfo=UTC),
    )
    got = distrusted(inspect(data, now=dt.datetime(2017, 5, 1, tzinfo=UTC)))
    assert len(got) == 1 and "WoSign and StartCom" in got[0]
    assert "Mozilla" in got[0] and "Chrome" in got[0]


def test_symantec_successor_is_not_flagged() -> None:
    data = chain_from("DigiCert Inc", "GeoTrust TLS RSA CA G1", not_before=f.NOW - 10 * f.DAY)
    assert distrusted(inspect(data, now=f.NOW)) == []
    old = chain_from(
        "GeoTrust Inc.", "GeoTrust SSL CA - G3", not_before=dt.datetime(2017, 1, 1, tzinfo=UTC)
    )
    got = distrusted(inspect(old, now=dt.datetime(2017, 3, 1, tzinfo=UTC) + dt.timedelta(days=600)))
    assert got and "Symantec" in got[0]


def test_entrust_chrome_uses_sct_mozilla_and_apple_use_not_before() -> None:
    now = dt.datetime(2025, 1, 10, tzinfo=UTC)
    # notBefore before every cutoff, but the SCT after Chrome's.
    sct_late = chain_from(
        "Entrust, Inc.", "Entrust Certification Authority - L1K",
        not_before=dt.datetime(2024, 11, 5, tzinfo=UTC),
        sct=(dt.datetime(2024, 11, 20, tzinfo=UTC), dt.datetime(2024, 11, 21, tzinfo=UTC)),
    )  # fmt: skip
    got = distrusted(inspect(sct_late, now=now))
    assert len(got) == 1 and "Chrome" in got[0]
    assert "Mozilla" not in got[0] and "Apple" not in got[0]
    # notBefore after Mozilla's and Apple's cutoffs, SCT before Chrome's.
    nb_late = chain_from(
        "Entrust, Inc.", "Entrust Certification Authority - L1K",
        not_before=dt.datetime(2024, 12, 5, tzinfo=UTC),
        sct=(dt.datetime(2024, 11, 1, tzinfo=UTC),),
    )  # fmt: skip
    got = distrusted(inspect(nb_late, now=now))
    assert len(got) == 1 and "Mozilla" in got[0] and "Apple" in got[0]
    assert "Chrome" not in got[0]
    # Issued before every cutoff: still trusted.
    early = chain_from(
        "Entrust, Inc.", "Entrust Certification Authority - L1K",
        not_before=dt.datetime(2024, 10, 1, tzinfo=UTC),
        sct=(dt.datetime(2024, 10, 1, tzinfo=UTC),),
    )  # fmt: skip
    assert distrusted(inspect(early, now=now)) == []


def test_match_by_fingerprint_of_user_entry(pki: f.PKI, store: TrustStore) -> None:
    fp = pki.inter.cert.fingerprint(
        __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()
    ).hex()
    options = InspectOptions(distrust=(*EVENTS, user_event(f"sha256:{fp}")))
    got = distrusted(inspect(f.pem(pki.leaf, pki.inter), now=f.NOW, store=store, options=options))
    assert len(got) == 1 and "fingerprint" in got[0]
    assert distrusted(inspect(f.pem(pki.leaf, pki.inter), now=f.NOW, store=store)) == []


def test_user_pattern_and_toml_file(pki: f.PKI, store: TrustStore, tmp_path: Path) -> None:
    data = f.pem(pki.leaf, pki.inter)
    options = InspectOptions(distrust=(user_event("O=test pki"),))
    assert distrusted(inspect(data, now=f.NOW, store=store, options=options))
    options = InspectOptions(distrust=(user_event("O=Other PKI"),))
    assert not distrusted(inspect(data, now=f.NOW, store=store, options=options))
    toml = tmp_path / "bad.toml"
    toml.write_text(
        '[[distrust]]\nname = "Test PKI compromise"\n'
        'issuer = "CN=Test Intermediate CA,O=Test PKI"\n'
        "issued_after = 2000-01-01\n"
    )
    events = load_distrust_file(toml)
    got = distrusted(inspect(data, now=f.NOW, store=store, options=InspectOptions(distrust=events)))
    assert got and "Test PKI compromise" in got[0]
    toml.write_text('[[distrust]]\nissuer = "O=Test PKI"\nissued_after = 2999-01-01\n')
    events = load_distrust_file(toml)
    assert not distrusted(
        inspect(data, now=f.NOW, store=store, options=InspectOptions(distrust=events))
    )


@pytest.mark.parametrize("bad", ["Example CA", "X=1", "O=", "sha256:zz"])
def test_bad_user_patterns(bad: str) -> None:
    with pytest.raises(ConfigError):
        user_event(bad)
