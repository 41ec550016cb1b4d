"""Issuance speed against a local Pebble: one `certman issue` process, 100 via the library.

Prints figures; asserts nothing (see the targets below). Run::

    .venv/bin/python benchmarks/issue_bench.py [--count 100] [--workers 8] [--runs 3]

What is measured:

1. **One issuance, whole process**: wall time of ``certman issue -d NAME
   --standalone`` as a separate process (Python start-up, imports,
   directory fetch, order, validation, finalization, download, store),
   with the account already registered; the median of ``--runs`` runs. The
   first run (which also registers the account) is shown apart.
2. **Many certificates through the library**: ``CertificateManager.issue_many``
   for ``--count`` lineages with ``--workers`` workers, one name each, all
   answered by one standalone responder.
3. **certbot**, when installed (``$CERTBOT``, ``certbot`` on the PATH, or
   ``/tmp/certbot-venv/bin/certbot``): ``certbot certonly --standalone`` for
   one certificate against the same Pebble (account registered by a first,
   untimed run), the median of ``--runs``; then the ratio.

Targets: one issuance <= 1/3 of certbot's wall time; 100 certificates <= 10 s.
Pebble runs with ``PEBBLE_VA_NOSLEEP=1`` and its default chaos (5% nonce
rejection, 50% authorization reuse).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from certman.manager import CertificateManager, IssueRequest, SolverSpec
from certman.store import FileStore
from certman.testing import LocalPebble

CERTMAN = [sys.executable, "-m", "certman"]


def find_certbot() -> str | None:
    for candidate in (
        os.environ.get("CERTBOT"),
        shutil.which("certbot"),
        "/tmp/certbot-venv/bin/certbot",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def bench_cli(pebble: LocalPebble, home: Path, runs: int) -> tuple[float, list[float]]:
    common = [
        *CERTMAN,
        "--home",
        str(home),
        "--server",
        pebble.directory_url,
        "--ca-bundle",
        str(pebble.ca_bundle),
    ]
    listen = ["--standalone", "--listen", f"127.0.0.1:{pebble.http_port}"]
    first = timed([*common, "issue", "-d", "first.bench.example", *listen, "--agree-tos"])
    times = [timed([*common, "issue", "-d", f"cli{i}.bench.example", *listen]) for i in range(runs)]
    return first, times


def bench_library(
    pebble: LocalPebble, home: Path, count: int, workers: int
) -> tuple[float, dict[str, int]]:
    store = FileStore(home)
    with CertificateManager(
        store,
        server=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", pebble.http_port),
        concurrency=workers,
    ) as manager:
        manager.register_account(agree_tos=True)
        requests = [IssueRequest(names=(f"lib{i}.bench.example",)) for i in range(count)]
        started = time.monotonic()
        report = manager.issue_many(requests)
        took = time.monotonic() - started
    for failed in report.failed:
        print(f"  failed: {failed.name}: {failed.reason}")
    return took, report.counts()


def bench_certbot(certbot: str, pebble: LocalPebble, work: Path, runs: int) -> list[float]:
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pebble.ca_bundle))
    base = [
        certbot,
        "certonly",
        "--standalone",
        "--non-interactive",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--server",
        pebble.directory_url,
        "--http-01-port",
        str(pebble.http_port),
        "--http-01-address",
        "127.0.0.1",
        "--config-dir",
        str(work / "config"),
        "--work-dir",
        str(work / "work"),
        "--logs-dir",
        str(work / "logs"),
        "--no-verify-ssl",
    ]
    timed([*base, "-d", "warmup.certbot.example"], env)  # registers the account
    return [timed([*base, "-d", f"cb{i}.certbot.example"], env) for i in range(runs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certman-bench-"))
    try:
        with LocalPebble() as pebble:
            first, cli_times = bench_cli(pebble, work / "cli", args.runs)
            cli = statistics.median(cli_times)
            print(
                f"certman issue, one process: median {cli:.2f} s of {args.runs} "
                f"({', '.join(f'{t:.2f}' for t in cli_times)}); first run incl. "
                f"registration {first:.2f} s"
            )
            lib, counts = bench_library(pebble, work / "lib", args.count, args.workers)
            print(
                f"library, {args.count} certificates / {args.workers} workers: {lib:.2f} s "
                f"({args.count / lib:.1f} per second) {counts}  [target <= 10 s]"
            )
            certbot = find_certbot()
            if certbot is None:
                print(
                    "certbot not installed: no comparison (pip install certbot into a venv, "
                    "then CERTBOT=/path/to/certbot)"
                )
                return 0
            cb_times = bench_certbot(certbot, pebble, work / "certbot", args.runs)
            cb = statistics.median(cb_times)
            print(
                f"certbot certonly --standalone, one process: median {cb:.2f} s of {args.runs} "
                f"({', '.join(f'{t:.2f}' for t in cb_times)})"
            )
            print(
                f"ratio certman/certbot: {cli / cb:.2f} (certman is {cb / cli:.1f}x faster) "
                "[target <= 0.33]"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
