"""certman.testing.LocalPebble against the real pebble binaries."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography import x509

from certman.errors import CertmanError
from certman.testing import LocalPebble
from tests.conftest import require_tool, running_pebble

pytestmark = pytest.mark.pebble

EAB = {"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble(alternate_roots=1, eab_keys=EAB, domain_blocklist=["blocked.test"])


def _get(url: str, cafile: str | None) -> bytes:
    ctx = ssl.create_default_context(cafile=cafile)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    with opener.open(url, timeout=5) as resp:
        data: bytes = resp.read()
        return data


def test_directory_answers_and_ca_bundle_verifies_it(pebble: LocalPebble) -> None:
    assert pebble.running
    directory = json.loads(_get(pebble.directory_url, str(pebble.ca_bundle)))
    assert {"newAccount", "newNonce", "newOrder", "revokeCert", "keyChange"} <= directory.keys()
    assert directory["newNonce"].startswith(f"https://127.0.0.1:{pebble.listen_port}/")
    # The config knob reached Pebble: EAB is required.
    assert directory["meta"]["externalAccountRequired"] is True


def test_tls_is_not_trusted_without_the_bundle(pebble: LocalPebble) -> None:
    with pytest.raises(OSError):
        _get(pebble.directory_url, "/etc/ssl/certs/ca-certificates.crt")


def test_ports_are_distinct_loopback_ports(pebble: LocalPebble) -> None:
    ports = [
        pebble.listen_port,
        pebble.management_port,
        pebble.http_port,
        pebble.tls_port,
        pebble.dns_port,
        pebble.challtestsrv_port,
    ]
    assert len(set(ports)) == len(ports)
    assert all(p > 0 for p in ports)


def test_roots_and_intermediates(pebble: LocalPebble) -> None:
    roots = [x509.load_pem_x509_certificate(p.encode()) for p in pebble.roots_pem()]
    assert len(roots) == 2  # default + one alternate
    assert roots[0].subject != roots[1].subject
    inter = x509.load_pem_x509_certificate(pebble.intermediate_pem(0).encode())
    assert inter.issuer == roots[0].subject


def test_cert_status_of_unknown_serial_is_a_clear_error(pebble: LocalPebble) -> None:
    with pytest.raises(CertmanError) as info:
        pebble.cert_status(0xDEADBEEF)
    assert info.value.code == "pebble-management"


def _dns_query(port: int, name: str, qtype: int) -> bytes:
    """One raw DNS query over UDP (just enough to check challtestsrv's answers)."""
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    question = qname + b"\x00" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(header + question, ("127.0.0.1", port))
        data, _ = sock.recvfrom(4096)
    return data


def test_set_and_clear_txt_are_served_by_dns(pebble: LocalPebble) -> None:
    value = "txt-value-" + os.urandom(4).hex()
    pebble.set_txt("_acme-challenge.dns.test", value)
    assert value.encode() in _dns_query(pebble.dns_port, "_acme-challenge.dns.test", 16)
    pebble.clear_txt("_acme-challenge.dns.test")
    assert value.encode() not in _dns_query(pebble.dns_port, "_acme-challenge.dns.test", 16)


def test_add_a_changes_resolution(pebble: LocalPebble) -> None:
    default = _dns_query(pebble.dns_port, "a.test", 1)
    assert bytes([127, 0, 0, 1]) in default
    pebble.add_a("a.test", ["10.9.8.7"])
    assert bytes([10, 9, 8, 7]) in _dns_query(pebble.dns_port, "a.test", 1)
    pebble.clear_a("a.test")
    assert bytes([10, 9, 8, 7]) not in _dns_query(pebble.dns_port, "a.test", 1)


def test_stop_terminates_both_processes_and_removes_files() -> None:
    require_tool("pebble", package="pebble")
    p = LocalPebble(nonce_reject=0, chain_length=2, validity_period=3600)
    with p:
        procs = list(p._procs)
        tmp = p.ca_bundle.parent
        assert tmp.is_dir()
        assert all(proc.poll() is None for proc in procs)
    assert all(proc.poll() is not None for proc in procs)
    assert not tmp.exists()
    assert not p.running
    # The port is free again.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", p.listen_port))


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(CertmanError) as info:
        LocalPebble(pebble="certman-no-such-pebble-binary").start()
    assert info.value.code == "pebble-missing"
    assert "apt-get install -y pebble" in str(info.value)


def test_start_failure_is_reported_with_the_log() -> None:
    require_tool("pebble-challtestsrv", package="pebble")
    # A "pebble" that exits at once stands in for a Pebble that cannot start.
    with pytest.raises(CertmanError) as info:
        LocalPebble(pebble="false", startup_timeout=5).start()
    assert info.value.code == "pebble-start"
    assert "exited with status 1" in str(info.value)
