"""certman.metrics: exposition text parsed back by Prometheus's own parser; atomic textfiles."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from prometheus_client.parser import text_string_to_metric_families
from renewal_certs import make_ca, make_leaf

from certman import CertificateFiles, CertificateMeta, CertmanError, FileStore
from certman.metrics import (
    CertificateMetrics,
    certificate_metrics,
    collect,
    escape_label_value,
    render,
    write_textfile,
)
from certman.renewal import decide, record_failure, record_success

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def fleet() -> list[CertificateMetrics]:
    return [
        CertificateMetrics(
            name="zeta",
            not_after=NOW + timedelta(days=40),
            renewal_due=False,
            next_renewal=NOW + timedelta(days=10),
            renewal_source="ari",
            last_success=NOW - timedelta(days=50),
            consecutive_failures=0,
            domains=("zeta.example", "www.zeta.example"),
            issuer="CN=Pebble Intermediate CA",
            key_type="ec-p256",
        ),
        CertificateMetrics(
            name='we"ird\\na\nme',
            not_after=NOW + timedelta(days=2),
            renewal_due=True,
            next_renewal=NOW - timedelta(days=1),
            renewal_source="lifetime",
            consecutive_failures=4,
        ),
    ]


def test_text_parses_back_with_the_right_values() -> None:
    text = render(fleet(), now=NOW)
    got = samples(text)
    weird = 'we"ird\\na\nme'
    assert (
        got[("certman_certificate_not_after_timestamp_seconds", (("name", "zeta"),))]
        == (NOW + timedelta(days=40)).timestamp()
    )
    assert got[("certman_certificate_renewal_due", (("name", "zeta"),))] == 0
    assert got[("certman_certificate_renewal_due", (("name", weird),))] == 1
    key = (
        "certman_certificate_next_renewal_timestamp_seconds",
        (("name", "zeta"), ("source", "ari")),
    )
    assert got[key] == (NOW + timedelta(days=10)).timestamp()
    assert got[("certman_certificate_renewal_consecutive_failures", (("name", weird),))] == 4
    assert (
        got[("certman_certificate_last_renewal_success_timestamp_seconds", (("name", "zeta"),))]
        == (NOW - timedelta(days=50)).timestamp()
    )
    # Unknown last success: the series is absent, not 0.
    assert not any(
        name == "certman_certificate_last_renewal_success_timestamp_seconds"
        and dict(labels)["name"] == weird
        for name, labels in got
    )
    info = (
        "certman_certificate_info",
        (
            ("domains", "zeta.example,www.zeta.example"),
            ("issuer", "CN=Pebble Intermediate CA"),
            ("key_type", "ec-p256"),
            ("name", "zeta"),
        ),
    )
    assert got[info] == 1
    assert got[("certman_metrics_generated_timestamp_seconds", ())] == NOW.timestamp()


def test_help_and_type_lines_and_escaping_on_the_wire() -> None:
    text = render(fleet(), now=NOW)
    lines = text.splitlines()
    assert text.endswith("\n")
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families)) == 7
    for family in families:
        help_index = lines.index(next(x for x in lines if x.startswith(f"# HELP {family} ")))
        assert lines[help_index + 1] == f"# TYPE {family} gauge"
    # The escaped name, exactly as the format wants it, on one line.
    assert 'certman_certificate_renewal_due{name="we\\"ird\\\\na\\nme"} 1' in lines
    # Sorted by name: the quote-named certificate before "zeta".
    due_lines = [x for x in lines if x.startswith("certman_certificate_renewal_due{")]
    assert due_lines[1].startswith('certman_certificate_renewal_due{name="zeta"}')


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("plain", "plain"), ('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb"), ("é", "é")],
)
def test_escape_label_value(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


def test_empty_fleet_still_has_the_families() -> None:
    text = render([], now=NOW)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "certman_certificate_not_after_timestamp_seconds" in names
    assert samples(text) == {("certman_metrics_generated_timestamp_seconds", ()): NOW.timestamp()}


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        render([CertificateMetrics("a", not_after=datetime(2026, 1, 1))], now=NOW)


def test_metrics_from_a_real_certificate_and_decision() -> None:
    leaf = make_leaf(make_ca(), ["m.example"], not_before=NOW - timedelta(days=70))
    state = record_success(None, now=NOW - timedelta(days=70))
    state = record_failure(state, now=NOW - timedelta(minutes=1))
    decision = decide(leaf.cert, now=NOW, state=state)
    metrics = certificate_metrics("m", leaf.cert, decision, domains=["m.example"])
    assert metrics.not_after == leaf.cert.not_valid_after_utc
    assert metrics.consecutive_failures == 1
    assert metrics.renewal_source == "backoff" and not metrics.renewal_due
    assert metrics.last_success == NOW - timedelta(days=70)
    got = samples(render([metrics], now=NOW))
    assert got[("certman_certificate_renewal_consecutive_failures", (("name", "m"),))] == 1


# -- textfile -------------------------------------------------------------------------


def test_textfile_is_written_readable_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "certman.prom"
    write_textfile(target, render(fleet(), now=NOW))
    assert samples(target.read_text())
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certman.prom"]


def test_textfile_replacement_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "certman.prom"
    small = render(fleet()[:1], now=NOW)
    big = render([CertificateMetrics(f"cert{i:05d}", not_after=NOW) for i in range(3000)], now=NOW)
    write_textfile(target, small)
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            write_textfile(target, big if i % 2 == 0 else small)
    finally:
        stop.set()
        thread.join()
    # A reader only ever saw one complete version or the other.
    assert seen <= {small, big}
    assert target.read_text() == small


def test_textfile_error_is_clear_and_cleans_up(tmp_path: Path) -> None:
    with pytest.raises(CertmanError) as info:
        write_textfile(tmp_path / "missing-dir" / "certman.prom", "x\n")
    assert info.value.code == "metrics-write-failed"
    # Renaming over a directory fails after the temp file exists: it must be removed.
    (tmp_path / "dir.prom").mkdir()
    with pytest.raises(CertmanError):
        write_textfile(tmp_path / "dir.prom", "x\n")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.prom"]
    assert os.listdir(tmp_path / "dir.prom") == []


# -- collecting from a real store, and the command ------------------------------------


def fill_store(home: Path) -> None:
    store = FileStore(home)
    ca = make_ca("Test Issuing CA")
    now = datetime.now(UTC)
    for name, days_old, failures in (("fresh", 1, 0), ("old", 80, 2)):
        leaf = make_leaf(ca, [f"{name}.example"], not_before=now - timedelta(days=days_old))
        files = CertificateFiles.from_parts(
            leaf.cert.public_bytes(Encoding.PEM),
            ca.cert.public_bytes(Encoding.PEM),
            leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        )
        meta = CertificateMeta(
            name=name,
            names=(f"{name}.example",),
            last_success_at=now - timedelta(days=days_old),
            consecutive_failures=failures,
        )
        store.save_certificate(name, files, meta)


def test_collect_reads_every_certificate_of_the_store(tmp_path: Path) -> None:
    fill_store(tmp_path)
    figures = {m.name: m for m in collect(FileStore(tmp_path), now=datetime.now(UTC))}
    assert set(figures) == {"fresh", "old"}
    assert not figures["fresh"].renewal_due and figures["fresh"].renewal_source == "lifetime"
    assert figures["old"].renewal_due and figures["old"].consecutive_failures == 2
    assert figures["old"].issuer == "CN=Test Issuing CA"
    assert figures["old"].domains == ("old.example",)


def run_certman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certman", *args], capture_output=True, text=True, timeout=60
    )


def test_metrics_command_prints_and_writes_textfile(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fill_store(home)
    printed = run_certman("--home", str(home), "metrics")
    assert printed.returncode == 0, printed.stderr
    got = samples(printed.stdout)
    assert got[("certman_certificate_renewal_due", (("name", "old"),))] == 1
    assert got[("certman_certificate_renewal_due", (("name", "fresh"),))] == 0

    target = tmp_path / "textfile" / "certman.prom"
    target.parent.mkdir()
    written = run_certman("--home", str(home), "metrics", "--textfile", str(target))
    assert written.returncode == 0 and written.stdout == ""
    assert samples(target.read_text()).keys() == got.keys()

    as_json = run_certman("--home", str(home), "metrics", "--json")
    assert as_json.returncode == 0
    assert {item["name"]: item["renewal_due"] for item in json.loads(as_json.stdout)} == {
        "fresh": False,
        "old": True,
    }


def test_metrics_command_errors_are_one_line(tmp_path: Path) -> None:
    bad_name = run_certman(
        "--home", str(tmp_path), "metrics", "--textfile", str(tmp_path / "x.txt")
    )
    assert bad_name.returncode == 2
    assert bad_name.stderr.count("\n") == 1 and "*.prom" in bad_name.stderr
    missing = run_certman(
        "--home", str(tmp_path), "metrics", "--textfile", str(tmp_path / "no" / "x.prom")
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("certman: error: could not write metrics")
    assert "[metrics-write-failed]" in missing.stderr
