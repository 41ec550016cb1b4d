"""Running a small certman cluster on one machine, for the tests and the benchmark.

- *Responders*: ``certman serve-http01`` processes, each bound to its own
  loopback address (127.0.0.2, 127.0.0.3...) on Pebble's HTTP-01 port.
  Pebble's DNS (challtestsrv) sends each name to one of them, so a
  validation lands on a responder, never on the worker that placed the order
  (workers only publish tokens in the shared store).
- *Workers*: separate processes that issue (library, ``issue_many``) or
  renew (``certman renew --store URL``) over the same PostgresStore.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from certman.manager import CertificateManager
from certman.store.postgres import PostgresStore
from certman.testing import AriServer, LocalPebble

REPO = Path(__file__).resolve().parents[2]

ISSUE_WORKER = """
import json, os, sys
from certman.manager import UNLIMITED, CertificateManager, IssueRequest, SolverSpec
from certman.store.postgres import PostgresStore

url, server, bundle, concurrency = sys.argv[1:5]
names = sys.argv[5:]
with CertificateManager(
    PostgresStore(url), server=server, ca_bundle=bundle, limits=UNLIMITED,
    default_solver=SolverSpec.http01_store(), concurrency=int(concurrency),
    request_timeout=60.0,
) as manager:
    report = manager.issue_many([IssueRequest(names=(n,)) for n in names])
print(json.dumps(report.counts()))
for outcome in report.failed:
    print(f"{outcome.name}: {outcome.reason} [{outcome.error_code}]", file=sys.stderr)
sys.exit(0 if report.ok else 1)
"""

RENEW_WORKER = """
import json, sys
from certman.manager import UNLIMITED, CertificateManager
from certman.store.postgres import PostgresStore

url, server, bundle, concurrency, lock_wait = sys.argv[1:6]
with CertificateManager(
    PostgresStore(url), server=server, ca_bundle=bundle, limits=UNLIMITED,
    concurrency=int(concurrency), request_timeout=60.0,
) as manager:
    report = manager.renew_due(lock_wait=float(lock_wait))
print(json.dumps(report.counts()))
for outcome in report.failed:
    print(f"{outcome.name}: {outcome.reason} [{outcome.error_code}]", file=sys.stderr)
sys.exit(0 if report.ok else 1)
"""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}


@dataclass
class Responder:
    proc: subprocess.Popen[str]
    address: str

    def stop(self) -> dict[str, int]:
        """SIGTERM it and return its summary (lookups, served, cache_hits)."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise AssertionError(f"responder {self.address} exited {self.proc.returncode}: {err}")
        summary: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return summary


def start_responder(url: str, host: str, port: int) -> Responder:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "certman",
            "serve-http01",
            "--store",
            url,
            "--listen",
            f"{host}:{port}",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"responder did not start: {proc.communicate()[1]}")
    return Responder(proc, json.loads(line)["listening"])


def responder_hosts(count: int) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(count)]


def route_names(pebble: LocalPebble, names: Sequence[str], hosts: Sequence[str]) -> None:
    """Point each name at one responder address, round robin."""
    for i, name in enumerate(names):
        pebble.add_a(name, [hosts[i % len(hosts)]])


def register(url: str, server: str, bundle: str) -> None:
    with CertificateManager(PostgresStore(url), server=server, ca_bundle=bundle) as manager:
        manager.register_account(agree_tos=True)


def split(names: Sequence[str], parts: int) -> list[list[str]]:
    return [list(names[i::parts]) for i in range(parts)]


def issue_workers(
    url: str, server: str, bundle: str, chunks: Sequence[Sequence[str]], concurrency: int = 4
) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", ISSUE_WORKER, url, server, bundle, str(concurrency), *chunk],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env(),
        )
        for chunk in chunks
    ]


def renew_workers(
    url: str,
    server: str,
    bundle: str,
    count: int,
    *,
    cli: bool = True,
    concurrency: int = 4,
    lock_wait: float = 120.0,
) -> list[subprocess.Popen[str]]:
    """``count`` renewal processes: ``certman renew`` (``cli``) or library workers."""
    procs = []
    for _ in range(count):
        if cli:
            args = [
                sys.executable,
                "-m",
                "certman",
                "--server",
                server,
                "--ca-bundle",
                bundle,
                "renew",
                "--store",  # after the subcommand, as docs/cluster.md writes it
                url,
                "--concurrency",
                str(concurrency),
                "--lock-wait",
                str(lock_wait),
                "--json",
            ]
        else:
            args = [
                sys.executable,
                "-c",
                RENEW_WORKER,
                url,
                server,
                bundle,
                str(concurrency),
                str(lock_wait),
            ]
        procs.append(
            subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env(),
            )
        )
    return procs


def make_all_due(store: PostgresStore, ari: AriServer, now: datetime | None = None) -> int:
    """Give every live certificate an ARI window that has passed: all are due now.

    Certificates issued later (the renewals) are unknown to the ARI stub and
    fall back to the lifetime rule: not due for years. So "due" flips exactly
    once per certificate and a second worker that finds it renewed does not
    renew it again.
    """
    now = now or datetime.now(UTC)
    names = store.list_certificates()
    for name in names:
        cert = x509.load_pem_x509_certificate(store.load_live(name).files.cert_pem)
        ari.set_window(cert, now - timedelta(days=2), now - timedelta(days=1))
    return len(names)


def versions_by_name(store: PostgresStore) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, version, _ in store.issued_serials():
        out.setdefault(name, []).append(version)
    return out
