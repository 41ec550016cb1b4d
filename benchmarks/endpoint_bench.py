"""Benchmark: scanning live TLS endpoints on loopback.

Starts ``--endpoints`` (default 1,000) real TLS endpoints on 127.0.0.1 --
``--servers`` forked server processes, each serving its share of listening
ports with asyncio + ssl (leaf + intermediate, EC P-256, made at start-up) --
then, each as a real subprocess:

* ``certman scan --endpoints-file FILE --format jsonl`` (all rules on, with the
  test root as trust store so every result must be clean) for 250 and 1,000
  endpoints, and 4,000 (the 1,000 listed four times) to show that peak RSS is
  flat in the number of endpoints;
* the library alone (``scan_endpoints`` and ``fetch_chains``), timed inside
  the child so interpreter start-up is not counted.

Prints endpoints per second and each child's peak RSS (``wait4`` rusage of
that child alone). Loopback only; every loop is bounded.

    .venv/bin/python benchmarks/endpoint_bench.py
    .venv/bin/python benchmarks/endpoint_bench.py --endpoints 1000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def _cert(cn, key, issuer=None, issuer_key=None, ca=False):  # type: ignore[no-untyped-def]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + (3000 if ca else 90) * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """(chain.pem, key.pem, root.pem) for ``localhost``."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Bench Root", root_key, ca=True)
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Bench Intermediate", int_key, root, root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("localhost", leaf_key, inter, int_key)
    pem = serialization.Encoding.PEM
    chain = directory / "chain.pem"
    chain.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    key = directory / "key.pem"
    key.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key.chmod(0o600)
    rootfile = directory / "root.pem"
    rootfile.write_bytes(root.public_bytes(pem))
    return chain, key, rootfile


# --- servers ------------------------------------------------------------------


class _Quiet(asyncio.Protocol):
    """Accept, handshake (asyncio does it), and let the client close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass


def _serve(socks: list[socket.socket], chain: str, key: str, ready) -> None:  # type: ignore[no-untyped-def]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for s in socks:
            await loop.create_server(_Quiet, sock=s, ssl=ctx, ssl_handshake_timeout=30)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def start_servers(n: int, servers: int, chain: Path, key: Path) -> tuple[list[int], list]:  # type: ignore[type-arg]
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1024)
        s.setblocking(False)
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    ctx = multiprocessing.get_context("fork")
    procs = []
    for i in range(servers):
        ready = ctx.Event()
        p = ctx.Process(target=_serve, args=(socks[i::servers], str(chain), str(key), ready))
        p.start()
        procs.append((p, ready))
    for s in socks:
        s.close()  # the servers hold their own copies
    for _p, ready in procs:
        if not ready.wait(60):
            raise SystemExit("a server process did not start")
    return ports, [p for p, _ in procs]


# --- measuring ------------------------------------------------------------------


def run_child(args: list[str], stdin_path: Path | None = None) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in MiB of that child alone, stdout)."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - read back after the child exits
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.PIPE,
        stdin=open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL,  # noqa: SIM115
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"child failed ({proc.returncode}): {err.decode()[-2000:]}")
    out.seek(0)
    return wall, usage.ru_maxrss // 1024, out.read()


LIB_SNIPPET = r"""
import json, sys, time, resource
from certman.inspector.endpoints import (
    ConnectOptions, fetch_chains, iter_endpoint_lines, scan_endpoints)
from certman.inspector.inspection import InspectOptions
mode, path, roots, conc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
opts = InspectOptions(trust_store=roots)
conn = ConnectOptions(connect_timeout=10, handshake_timeout=10)
with open(path) as fh:
    start = time.perf_counter()
    ok = bad = 0
    if mode == "scan":
        lines = iter_endpoint_lines(fh)
        for r in scan_endpoints(lines, options=opts, connect=conn, concurrency=conc):
            good = r.ok and not r.report.findings
            ok += good; bad += not good
    else:
        for r in fetch_chains(iter_endpoint_lines(fh), options=conn, concurrency=conc):
            ok += r.ok; bad += not r.ok
    elapsed = time.perf_counter() - start
print(json.dumps({"ok": ok, "bad": bad, "elapsed": elapsed}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=2, help="server processes")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=4, help="passes for the flatness run")
    args = parser.parse_args()
    n = args.endpoints
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 4096), hard))

    with tempfile.TemporaryDirectory(prefix="certman-endpoint-bench-") as tmp:
        d = Path(tmp)
        chain, key, roots = make_pki(d)
        print(f"starting {n} TLS endpoints on 127.0.0.1 in {args.servers} server processes...")
        ports, procs = start_servers(n, args.servers, chain, key)
        try:
            sizes = sorted({max(1, n // 4), n})
            files: dict[int, Path] = {}
            for size in [*sizes, n * args.repeat]:
                path = d / f"hosts-{size}.txt"
                with path.open("w") as fh:
                    for i in range(size):
                        fh.write(f"localhost:{ports[i % n]}\n")
                files[size] = path
            rows = []
            cli = [sys.executable, "-m", "certman", "scan", "--format", "jsonl"]
            common = ["--trust-store", str(roots), "--concurrency", str(args.concurrency)]
            for size in [*sizes, n * args.repeat]:
                wall, rss, out = run_child([*cli, "--endpoints-file", str(files[size]), *common])
                results = [json.loads(line) for line in out.splitlines()]
                clean = sum(1 for r in results if r["status"] == "ok" and not r["findings"])
                if len(results) != size or clean != size:
                    raise SystemExit(f"expected {size} clean results, got {clean}/{len(results)}")
                rows.append(("certman scan (CLI, wall incl. start-up)", size, wall, rss))
            for mode in ("scan", "fetch"):
                wall, rss, out = run_child(
                    [
                        sys.executable,
                        "-c",
                        LIB_SNIPPET,
                        mode,
                        str(files[n]),
                        str(roots),
                        str(args.concurrency),
                    ]
                )
                stats = json.loads(out)
                if stats["ok"] != n:
                    raise SystemExit(f"library {mode}: {stats}")
                label = (
                    "scan_endpoints (library: fetch + inspect)"
                    if mode == "scan"
                    else "fetch_chains (library: handshakes only)"
                )
                rows.append((label, n, stats["elapsed"], rss))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(10)

    print(f"\n{'what':<44} {'endpoints':>9} {'seconds':>8} {'endpoints/s':>12} {'peak RSS':>9}")
    for label, size, secs, rss in rows:
        print(f"{label:<44} {size:>9} {secs:>8.2f} {size / secs:>12.0f} {rss:>6} MiB")
    print(
        f"\n(concurrency {args.concurrency}; {os.cpu_count()} cores shared by the "
        f"{args.servers} server processes and the scanner; target >= 300 endpoints/s)"
    )


if __name__ == "__main__":
    main()
