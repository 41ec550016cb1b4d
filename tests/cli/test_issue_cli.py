"""`certman account`, `issue`, `list`, `revoke` as real processes against real Pebble."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from certman.client import AcmeClient, fetch_directory
from certman.errors import AcmeError
from certman.keys import load_private_key
from tests.cli.conftest import BLOCKED, Certman, snapshot

pytestmark = pytest.mark.pebble


def _leaf(home: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        (home / "certs" / name / "live" / "cert.pem").read_bytes()
    )


def _sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(
        [str(v) for v in san.get_values_for_type(x509.DNSName)]
        + [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    )


def _account_dir(home: Path) -> Path:
    (path,) = (home / "accounts").glob("*/*/account.json")
    return path.parent


def test_register_show_update_never_print_keys(certman: Certman) -> None:
    out = certman.run("account", "register", "--agree-tos", "--email", "ops@example.org", "--json")
    data = json.loads(out.stdout)
    assert data["status"] == "valid" and data["contact"] == ["mailto:ops@example.org"]
    assert data["key_type"] == "ec-p256" and data["key_thumbprint"]
    key_file = _account_dir(certman.home) / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = certman.run("account", "register", "--agree-tos")
    assert "already registered" in again.stdout
    shown = certman.run("account", "show")
    assert data["uri"] in shown.stdout and "ops@example.org" in shown.stdout
    updated = json.loads(
        certman.run("account", "update", "--email", "new@example.org", "--json").stdout
    )
    assert updated["contact"] == ["mailto:new@example.org"]
    everything = out.stdout + again.stdout + shown.stdout + json.dumps(updated)
    assert "PRIVATE" not in everything and '"d"' not in everything


def test_issue_single_multi_and_ip(registered: Certman) -> None:
    out = registered.run("issue", "-d", "cli-one.example", *registered.listen)
    live = registered.home / "certs" / "cli-one.example" / "live"
    assert str(live / "fullchain.pem") in out.stdout
    assert _sans(_leaf(registered.home, "cli-one.example")) == ["cli-one.example"]
    assert stat.S_IMODE((live / "privkey.pem").stat().st_mode) == 0o600

    multi = json.loads(
        registered.run(
            "issue",
            "-d",
            "multi.example",
            "-d",
            "www.multi.example",
            "--name",
            "multi",
            "--key-type",
            "rsa-2048",
            *registered.listen,
            "--json",
        ).stdout
    )
    assert multi["status"] == "issued" and multi["names"] == ["multi.example", "www.multi.example"]
    leaf = _leaf(registered.home, "multi")
    assert _sans(leaf) == ["multi.example", "www.multi.example"]
    assert leaf.public_key().key_size == 2048  # type: ignore[union-attr]

    registered.run("issue", "-d", "127.0.0.1", *registered.listen)
    assert _sans(_leaf(registered.home, "127.0.0.1")) == ["127.0.0.1"]


def test_issue_registers_with_agree_tos(certman: Certman) -> None:
    certman.run("issue", "-d", "fresh.example", *certman.listen, "--agree-tos")
    assert _leaf(certman.home, "fresh.example")
    assert (_account_dir(certman.home) / "account.json").exists()


def test_issue_wildcard_through_a_dns_hook(registered: Certman, tmp_path: Path) -> None:
    hook = tmp_path / "dns-hook.py"
    calls = tmp_path / "dns-calls.log"
    hook.write_text(
        f"""#!{sys.executable}
import json, sys, urllib.request
action, record, value = sys.argv[1:4]
with open({str(calls)!r}, "a") as log:
    log.write(f"{{action}} {{record}}\\n")
path = "/set-txt" if action == "set" else "/clear-txt"
body = {{"host": record, "value": value}} if action == "set" else {{"host": record}}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
req = urllib.request.Request({registered.pebble.challtestsrv_url!r} + path,
                             data=json.dumps(body).encode(), method="POST")
opener.open(req, timeout=10).read()
"""
    )
    hook.chmod(0o755)
    registered.run("issue", "-d", "*.wild.example", "-d", "wild.example", "--dns-hook", str(hook))
    assert _sans(_leaf(registered.home, "wild.example")) == ["*.wild.example", "wild.example"]
    # Both names share one record name, with two values set, then cleared.
    assert calls.read_text().splitlines() == [
        "set _acme-challenge.wild.example.",
        "set _acme-challenge.wild.example.",
        "clear _acme-challenge.wild.example.",
        "clear _acme-challenge.wild.example.",
    ]
    meta = json.loads((registered.home / "certs" / "wild.example" / "meta.json").read_text())
    assert meta["solver"] == "dns-hook" and meta["solver_options"]["command"] == str(hook)


def test_list_formats(registered: Certman) -> None:
    empty = registered.run("list")
    assert "No certificates yet" in empty.stdout
    registered.run("issue", "-d", "listed.example", *registered.listen)
    table = registered.run("list").stdout
    assert "listed.example" in table and "lifetime" in table and "Pebble" in table
    rows = json.loads(registered.run("list", "--json").stdout)
    (row,) = rows
    assert row["name"] == "listed.example" and row["names"] == ["listed.example"]
    assert row["issuer"].startswith("Pebble Intermediate CA")
    assert row["key_type"] == "ec-p256" and row["days_left"] > 1000
    assert row["renewal_source"] == "lifetime" and row["next_renewal"] and row["not_after"]
    assert row["last_error"] is None and row["profile"] is None
    assert json.loads(registered.run("list", "--format", "json").stdout) == rows
    prom = registered.run("list", "--format", "prometheus").stdout
    assert 'certman_certificate_not_after_timestamp_seconds{name="listed.example"}' in prom


def test_revoke(registered: Certman) -> None:
    registered.run("issue", "-d", "gone.example", *registered.listen)
    serial = _leaf(registered.home, "gone.example").serial_number
    assert not registered.pebble.is_revoked(serial)
    out = registered.run("revoke", "gone.example", "--reason", "superseded")
    assert "Revoked gone.example" in out.stdout
    assert registered.pebble.is_revoked(serial)
    again = registered.run("revoke", "gone.example", check=False)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1


def test_rollover_then_deactivate(registered: Certman) -> None:
    account = _account_dir(registered.home)
    old_pem = (account / "key.pem").read_bytes()
    uri = json.loads((account / "account.json").read_text())["uri"]
    out = registered.run("account", "rollover", "--json")
    assert "PRIVATE" not in out.stdout
    assert (account / "key.prev.pem").read_bytes() == old_pem
    assert (account / "key.pem").read_bytes() != old_pem
    directory = fetch_directory(
        registered.pebble.directory_url, ca_bundle=registered.pebble.ca_bundle
    )
    with (
        AcmeClient(
            directory,
            load_private_key(old_pem),
            account_url=uri,
            ca_bundle=registered.pebble.ca_bundle,
        ) as stale,
        pytest.raises(AcmeError),
    ):
        stale.account()
    registered.run("issue", "-d", "rolled.example", *registered.listen)

    refused = registered.run("account", "deactivate", check=False)
    assert refused.returncode == 2  # not a TTY and no --yes
    registered.run("account", "deactivate", "--yes")
    assert json.loads((account / "account.json").read_text())["status"] == "deactivated"
    after = registered.run("issue", "-d", "late.example", *registered.listen, check=False)
    assert after.returncode == 1 and "no-account" in after.stderr


# -- bad input: one line on stderr, exit 1, nothing damaged --------------------


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("certman: error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture()
def populated(registered: Certman) -> Certman:
    registered.run("issue", "-d", "keep.example", *registered.listen)
    return registered


def test_unreachable_directory(populated: Certman) -> None:
    before = snapshot(populated.home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    populated.server = f"https://127.0.0.1:{port}/dir"
    proc = populated.run("issue", "-d", "x.example", *populated.listen, "--agree-tos", check=False)
    line = _one_error_line(proc)
    assert f"127.0.0.1:{port}" in line and "acme-unreachable" in line
    assert snapshot(populated.home) == before


def test_name_the_ca_refuses(populated: Certman) -> None:
    before = snapshot(populated.home)
    proc = populated.run("issue", "-d", BLOCKED, "-d", "ok.example", *populated.listen, check=False)
    line = _one_error_line(proc)
    assert BLOCKED in line and "rejected-identifier" in line
    assert snapshot(populated.home) == before


def test_responder_port_in_use(populated: Certman) -> None:
    before = snapshot(populated.home)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = populated.run(
            "issue",
            "-d",
            "busy.example",
            "--standalone",
            "--listen",
            f"127.0.0.1:{port}",
            check=False,
        )
    line = _one_error_line(proc)
    assert str(port) in line and "port-in-use" in line
    assert snapshot(populated.home) == before


def test_corrupt_account_file(populated: Certman) -> None:
    account_json = _account_dir(populated.home) / "account.json"
    account_json.write_text("{ this is not json")
    before = snapshot(populated.home)
    proc = populated.run("issue", "-d", "c.example", *populated.listen, check=False)
    line = _one_error_line(proc)
    assert "store-corrupt" in line and "account.json" in line
    assert snapshot(populated.home) == before
    listed = populated.run("list", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["keep.example"]


def test_usage_errors_exit_2(registered: Certman) -> None:
    proc = registered.run("issue", "-d", "u.example", check=False)
    assert proc.returncode == 2 and "--standalone" in proc.stderr
    proc = registered.run(
        "issue", "-d", "u.example", "--standalone", "--listen", "x:y", check=False
    )
    assert proc.returncode == 2


def test_profile_the_ca_does_not_offer(populated: Certman) -> None:
    before = snapshot(populated.home)
    proc = populated.run(
        "issue", "-d", "p.example", *populated.listen, "--profile", "shortlived", check=False
    )
    line = _one_error_line(proc)
    assert "shortlived" in line and "acme-profile-not-offered" in line
    assert snapshot(populated.home) == before
