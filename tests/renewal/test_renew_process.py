"""``certman renew`` as real processes: ARI state kept across runs, hooks, metrics.

The CA is the real Pebble behind :class:`certman.testing.AriServer`, which adds
``renewalInfo`` to Pebble's directory; certman is pointed at the proxy's
directory URL, so every run sees a CA with ARI.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ari_server import stub_cert_id
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from certman.store import FileStore
from certman.testing import AriServer, LocalPebble
from tests.conftest import running_pebble

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble()


@pytest.fixture(scope="module")
def proxy(pebble: LocalPebble) -> Iterator[AriServer]:
    with AriServer(
        upstream_directory=pebble.directory_url, upstream_ca_bundle=str(pebble.ca_bundle)
    ) as server:
        yield server


@dataclass
class Cli:
    home: Path
    pebble: LocalPebble
    server: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
        cmd = [sys.executable, "-m", "certman", "--home", str(self.home), "--server",
               self.server, "--ca-bundle", str(self.pebble.ca_bundle), *args]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"certman {args} exited {proc.returncode}: {proc.stderr}")
        return proc

    def renew(self, *args: str) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.run("renew", "--json", *args).stdout)
        return report

    def live_cert(self, name: str) -> x509.Certificate:
        pem = FileStore(self.home).load_live(name).files.cert_pem
        return x509.load_pem_x509_certificate(pem)

    def issue(self, name: str, *extra: str) -> None:
        listen = f"127.0.0.1:{self.pebble.http_port}"
        self.run("issue", "-d", f"{name}.example", "--name", name, "--standalone",
                 "--listen", listen, *extra)  # fmt: skip


@pytest.fixture()
def cli(pebble: LocalPebble, proxy: AriServer, tmp_path: Path) -> Cli:
    runner = Cli(tmp_path / "home", pebble, proxy.directory_url)
    runner.run("account", "register", "--agree-tos")
    return runner


def outcome(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in report["certificates"] if c["name"] == name]
    return found


def fetches_for(proxy: AriServer, cert: x509.Certificate) -> int:
    return sum(r.path == f"/renewal-info/{stub_cert_id(cert)}" for r in proxy.requests)


def test_ari_moment_and_retry_after_persist_across_runs(cli: Cli, proxy: AriServer) -> None:
    cli.issue("steady")
    cert = cli.live_cert("steady")
    now = datetime.now(UTC)
    start, end = now + timedelta(days=20), now + timedelta(days=22)
    proxy.set_window(stub_cert_id(cert), start, end, retry_after="7200")

    first = outcome(cli.renew(), "steady")
    assert first["status"] == "not-due" and first["renewal_source"] == "ari"
    chosen = datetime.fromisoformat(first["next_renewal"])
    assert start.replace(microsecond=0) <= chosen < end
    meta = FileStore(cli.home).load_meta("steady")
    assert meta.ari_chosen_time == chosen
    assert meta.ari_retry_after is not None
    assert meta.ari_retry_after - datetime.now(UTC) <= timedelta(hours=2)
    assert fetches_for(proxy, cert) == 1

    # A second process: same moment, and the CA is not asked again before Retry-After.
    second = outcome(cli.renew(), "steady")
    assert second["status"] == "not-due"
    assert datetime.fromisoformat(second["next_renewal"]) == chosen
    assert fetches_for(proxy, cert) == 1

    # The metrics command reports the same moment, from the store alone.
    text = cli.run("metrics").stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (
        "certman_certificate_next_renewal_timestamp_seconds",
        (("name", "steady"), ("source", "ari")),
    )
    assert samples[key] == pytest.approx(chosen.timestamp())
    assert samples[("certman_certificate_renewal_due", (("name", "steady"),))] == 0


def test_window_in_the_past_renews_and_deploy_hook_sees_the_new_certificate(
    cli: Cli, proxy: AriServer, tmp_path: Path
) -> None:
    record = tmp_path / "deployed.txt"
    hook = (
        f'printf "%s %s %s\\n" "$CERTMAN_NAME" "$CERTMAN_DOMAINS" '
        f'"$(openssl x509 -noout -serial -in "$CERTMAN_FULLCHAIN")" >> {shlex.quote(str(record))}'
    )
    cli.issue("urgent", "--deploy-hook", hook)
    old = cli.live_cert("urgent")
    record.unlink()  # the issuance ran the hook too
    now = datetime.now(UTC)
    proxy.set_window(
        stub_cert_id(old),
        now - timedelta(days=2),
        now - timedelta(days=1),
        explanation_url="https://ca.example/incident",
    )

    result = outcome(cli.renew(), "urgent")
    assert result["status"] == "renewed", result
    assert result["replaces"] == stub_cert_id(old)
    new = cli.live_cert("urgent")
    assert new.serial_number != old.serial_number
    # The deploy hook ran after the switch: it read the new certificate through live/.
    name, domains, serial = record.read_text().split()
    assert (name, domains) == ("urgent", "urgent.example")
    assert int(serial.removeprefix("serial="), 16) == new.serial_number
    # The new certificate starts with a clean renewal state.
    meta = FileStore(cli.home).load_meta("urgent")
    assert meta.ari_window_start is None and meta.ari_chosen_time is None
    assert meta.consecutive_failures == 0
