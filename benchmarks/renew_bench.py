"""Benchmark: ``certman renew --force`` of N certificates as one process, vs certbot.

Set-up (not timed): a LocalPebble (``PEBBLE_VA_NOSLEEP=1``, Pebble's default
chaos: 5% bad nonces, 50% authorization reuse); a webroot served on Pebble's
HTTP-01 port by a threaded static file server; N certificates issued into a
fresh certman home through the library (``CertificateManager.issue_many``
with a webroot solver, as ``certman issue --webroot`` stores it).

Timed: ``certman --home H --server URL --ca-bundle B renew --force --json``
as one whole process, from exec to exit. Every certificate must have a new
live version afterwards, or the run counts as failed.

When certbot is found (``--certbot PATH``, or ``certbot`` on PATH), the same
run issues M certificates with ``certbot certonly --webroot`` (one after the
other: certbot locks its directories) and times ``certbot renew
--force-renewal --no-random-sleep-on-renew`` as one process. M defaults to
min(N, 20) because certbot renews serially at about 2 s a certificate; the
comparison is of throughput (certificates per second), which is what the
ratio shows.

Targets (issue 4): 200 certificates in <= 20 s; >= 20x certbot's throughput.

    .venv/bin/python benchmarks/renew_bench.py --n 200
    .venv/bin/python benchmarks/renew_bench.py --n 200 --certbot /path/to/certbot
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from certman.manager import CertificateManager, IssueRequest, SolverSpec
from certman.store import FileStore
from certman.testing import LocalPebble

CERTMAN = [sys.executable, "-m", "certman"]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_webroot(directory: Path, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(
        ("127.0.0.1", port), partial(_QuietHandler, directory=str(directory))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if check and result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return result


def certman_setup(
    pebble: LocalPebble, home: Path, webroot: Path, names: list[str], parallel: int
) -> None:
    """Register with the CLI, then issue through the library (faster than N processes)."""
    common = [*CERTMAN, "--home", str(home), "--server", pebble.directory_url,
              "--ca-bundle", str(pebble.ca_bundle)]  # fmt: skip
    run([*common, "account", "register", "--agree-tos"])
    spec = SolverSpec.webroot(webroot)
    with CertificateManager(
        FileStore(home),
        server=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        concurrency=parallel,
        limits=None,
    ) as manager:
        report = manager.issue_many(IssueRequest(names=(name,), solver=spec) for name in names)
    failed = [o for o in report.outcomes if o.status != "issued"]
    if failed:
        sys.exit(f"set-up: {len(failed)} issuances failed, e.g. {failed[0]}")


def certman_renew(
    pebble: LocalPebble, home: Path, names: list[str], concurrency: int | None
) -> float:
    store = FileStore(home)
    before = {name: store.list_versions(name)[-1] for name in names}
    cmd = [*CERTMAN, "--home", str(home), "--server", pebble.directory_url,
           "--ca-bundle", str(pebble.ca_bundle), "renew", "--force", "--json"]  # fmt: skip
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    started = time.perf_counter()
    result = run(cmd, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
        sys.exit(f"certman renew exited {result.returncode}")
    after = {name: store.list_versions(name)[-1] for name in names}
    stale = [name for name in names if after[name] <= before[name]]
    if stale:
        sys.exit(f"certman renew left {len(stale)} certificates unrenewed, e.g. {stale[:3]}")
    try:
        summary = json.loads(result.stdout)
    except ValueError:
        summary = None
    if isinstance(summary, dict):
        print(f"certman renew reported: {summary.get('counts')}")
    return elapsed


def certbot_run(certbot: str, pebble: LocalPebble, work: Path, webroot: Path, count: int) -> float:
    dirs = ["--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
            "--logs-dir", str(work / "logs")]  # fmt: skip
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pebble.ca_bundle))
    for i in range(count):
        name = f"cb{i}.bench.example"
        cmd = [certbot, *dirs, "certonly", "--non-interactive", "--agree-tos",
               "--register-unsafely-without-email", "--server", pebble.directory_url,
               "--webroot", "-w", str(webroot), "-d", name, "--cert-name", name]  # fmt: skip
        run(cmd, env=env)
    started = time.perf_counter()
    run([certbot, *dirs, "renew", "--force-renewal", "--no-random-sleep-on-renew",
         "--non-interactive"], env=env)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="certificates renewed by certman")
    parser.add_argument("--concurrency", type=int, default=None, help="certman renew --concurrency")
    parser.add_argument(
        "--setup-parallel", type=int, default=4, help="certman issue processes at once"
    )
    parser.add_argument("--certbot", default=shutil.which("certbot"), help="certbot executable")
    parser.add_argument("--certbot-n", type=int, default=None, help="certificates for certbot")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="renew-bench-") as tmp, LocalPebble() as pebble:
        root = Path(tmp)
        webroot = root / "webroot"
        (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        server = serve_webroot(webroot, pebble.http_port)
        try:
            names = [f"c{i}.bench.example" for i in range(args.n)]
            t0 = time.perf_counter()
            certman_setup(pebble, root / "certman", webroot, names, args.setup_parallel)
            setup_s = time.perf_counter() - t0
            print(f"set-up: {args.n} certificates issued with certman in {setup_s:.1f} s")
            certman_s = certman_renew(pebble, root / "certman", names, args.concurrency)
            certman_rate = args.n / certman_s
            print(f"certman renew --force: {args.n} certificates in {certman_s:.2f} s "
                  f"({certman_rate:.1f}/s)  target <= 20 s for 200")  # fmt: skip
            if args.certbot:
                count = args.certbot_n or min(args.n, 20)
                certbot_s = certbot_run(args.certbot, pebble, root / "certbot", webroot, count)
                certbot_rate = count / certbot_s
                print(f"certbot renew --force-renewal: {count} certificates in {certbot_s:.2f} s "
                      f"({certbot_rate:.2f}/s)")  # fmt: skip
                print(f"throughput ratio certman/certbot: {certman_rate / certbot_rate:.1f}x  "
                      "(target >= 20x)")  # fmt: skip
            else:
                print("certbot not found (--certbot PATH): no comparison")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
