"""Benchmark: ``certman scan --format jsonl`` against a bare parse loop.

Builds a fleet of N realistic bundles (mixed issuers and key types, leaf +
intermediate(s), some in the wrong order, some with the root, some DER, some
expired, some SHA-1, some from distrusted CAs, some junk files), then in the
same run times:

* the baseline: one process, one core, reads every file and parses every
  certificate in it with cryptography (nothing else);
* ``certman scan DIR --format jsonl`` (all rules on, output to a file) as a
  real subprocess, while sampling the RSS of its whole process tree.

Prints the ratio (certman / baseline wall time), certificates per second and
certman's peak RSS (sum over the process tree, sampled from /proc every 20 ms;
also the largest single process from getrusage(RUSAGE_CHILDREN)).

    .venv/bin/python benchmarks/scan_bench.py --n 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from multiprocessing import get_context
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def _name(cn: str, o: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca(subject: x509.Name, key, issuer_name, issuer_key, days=3650):  # type: ignore[no-untyped-def]
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 1000 * DAY)
        .not_valid_after(NOW + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


class Hierarchy:
    """A root and a chain of intermediates; the last one issues leaves."""

    def __init__(self, label: str, org: str, root_key, inter_keys) -> None:  # type: ignore[no-untyped-def]
        root_name = _name(f"{label} Root", org)
        self.root = _ca(root_name, root_key, root_name, root_key, 9000)
        self.chain: list[x509.Certificate] = []
        parent_name, parent_key = root_name, root_key
        for n, key in enumerate(inter_keys):
            name = _name(f"{label} Issuing CA {n + 1}", org)
            self.chain.insert(0, _ca(name, key, parent_name, parent_key, 2000))
            parent_name, parent_key = name, key
        self.issuer_name, self.issuer_key = parent_name, parent_key


_H: list[Hierarchy] = []
_LEAF_KEYS: list = []  # type: ignore[type-arg]


def _setup() -> None:
    rng = random.Random(1)
    r4096 = rsa.generate_private_key(65537, 4096)
    r2048 = [rsa.generate_private_key(65537, 2048) for _ in range(4)]
    p256 = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    p384 = ec.generate_private_key(ec.SECP384R1())
    _H.extend(
        [
            Hierarchy("Bench Encrypt RSA", "Bench Encrypt", r4096, [r2048[0]]),  # like LE R1x
            Hierarchy("Bench Encrypt EC", "Bench Encrypt", p384, [p256[0]]),  # like LE E-series
            Hierarchy("Sectigo-like", "Bench Sectigo", r2048[1], [r2048[2], r2048[3]]),
            Hierarchy("DigiCert-like", "Bench DigiCert", p256[1], [p256[2]]),
            Hierarchy("StartCom-like", "StartCom Ltd.", r2048[1], [r2048[2]]),
        ]
    )
    _LEAF_KEYS.extend(ec.generate_private_key(ec.SECP256R1()) for _ in range(20))
    _LEAF_KEYS.extend(rsa.generate_private_key(65537, 2048) for _ in range(20))
    rng.shuffle(_LEAF_KEYS)


WEIGHTS = [45, 25, 15, 12, 3]


def _resign_sha1(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    old, new = bytes.fromhex("2a864886f70d01010b"), bytes.fromhex("2a864886f70d010105")
    tbs = cert.tbs_certificate_bytes.replace(old, new, 1)
    sig = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())

    def length(n: int) -> bytes:
        if n < 128:
            return bytes([n])
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(raw)]) + raw

    alg = b"\x30\x0d\x06\x09" + new + b"\x05\x00"
    bits = b"\x03" + length(len(sig) + 1) + b"\x00" + sig
    body = tbs + alg + bits
    return b"\x30" + length(len(body)) + body


def _make(job: tuple[int, str]) -> None:
    i, path = job
    rng = random.Random(i)
    h = rng.choices(_H, WEIGHTS)[0]
    roll = rng.random()
    if roll < 0.01:
        Path(path).write_bytes(os.urandom(rng.randint(0, 2000)))
        return
    key = _LEAF_KEYS[i % len(_LEAF_KEYS)]
    start = NOW - rng.randint(1, 85) * DAY
    if 0.01 <= roll < 0.06:
        start = NOW - 200 * DAY  # expired
    host = f"site{i}.example.com"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(h.issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName(f"www.{host}")]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(h.issuer_key.public_key()),
            critical=False,
        )
        .sign(h.issuer_key, hashes.SHA256())
    )
    leaf_der = cert.public_bytes(serialization.Encoding.DER)
    if 0.06 <= roll < 0.08 and isinstance(h.issuer_key, rsa.RSAPrivateKey):
        leaf_der = _resign_sha1(cert, h.issuer_key)
    chain = [x509.load_der_x509_certificate(leaf_der), *h.chain]
    if 0.08 <= roll < 0.13:
        chain.reverse()  # wrong order
    elif 0.13 <= roll < 0.18:
        chain.append(h.root)  # root included
    elif 0.18 <= roll < 0.21:
        chain = chain[:1]  # missing intermediate
    if 0.21 <= roll < 0.31:
        Path(path).write_bytes(leaf_der)  # DER: the leaf alone
        return
    Path(path).write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))


def build_fleet(root: Path, n: int) -> Path:
    """Write N bundles under root/fleet (1000 per directory) and the roots file."""
    _setup()
    fleet = root / "fleet"
    jobs = []
    for i in range(n):
        d = fleet / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        ext = ".pem" if i % 7 else ".crt"
        jobs.append((i, str(d / f"site{i}{ext}")))
    with get_context("fork").Pool(os.cpu_count() or 1) as pool:
        for _ in pool.imap_unordered(_make, jobs, chunksize=500):
            pass
    (root / "roots.pem").write_bytes(
        b"".join(h.root.public_bytes(serialization.Encoding.PEM) for h in _H)
    )
    return fleet


def baseline(fleet: Path) -> tuple[float, int, float]:
    """Read every file and parse every certificate, one core.

    Returns (wall seconds, certificates, CPU seconds).
    """
    certs = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for dirpath, _dirs, files in os.walk(fleet):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    data = fh.read()
                try:
                    if b"-----BEGIN" in data:
                        certs += len(x509.load_pem_x509_certificates(data))
                    else:
                        x509.load_der_x509_certificate(data)
                        certs += 1
                except ValueError:
                    pass
    return time.perf_counter() - t0, certs, time.process_time() - c0


def signature_floor(fleet: Path) -> tuple[float, int]:
    """CPU seconds of the leaf signature checks alone, and how many there were.

    The one check certman cannot skip or cache: every end-entity signature
    is verified with its issuer's key (when the issuer is in the bundle, as
    certman does). Finding the issuer and preparing the inputs is not
    timed; only the ``verify`` calls are, with each issuer's key parsed
    once, so this is the floor any checking scanner pays on top of the
    bare parse loop.
    """
    keys: dict[bytes, object] = {}
    spent = 0.0
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for dirpath, _dirs, files in os.walk(fleet):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    data = fh.read()
                try:
                    certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else []
                except ValueError:
                    continue
                by_subject = {c.subject.public_bytes(): c for c in certs}
                leaf = next(
                    (
                        c
                        for c in certs
                        if not _is_ca(c)
                        and c.issuer.public_bytes() in by_subject
                        and c.issuer != c.subject
                    ),
                    None,
                )
                if leaf is None:
                    continue
                issuer = by_subject[leaf.issuer.public_bytes()]
                fp = issuer.fingerprint(hashes.SHA256())
                pub = keys.get(fp)
                if pub is None:
                    pub = keys[fp] = issuer.public_key()
                tbs, sig, algorithm = (
                    leaf.tbs_certificate_bytes,
                    leaf.signature,
                    leaf.signature_hash_algorithm,
                )
                assert algorithm is not None
                c0 = time.process_time()
                if isinstance(pub, ec.EllipticCurvePublicKey):
                    pub.verify(sig, tbs, ec.ECDSA(algorithm))
                elif isinstance(pub, rsa.RSAPublicKey):
                    pub.verify(sig, tbs, padding.PKCS1v15(), algorithm)
                spent += time.process_time() - c0
                count += 1
    return spent, count


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _tree_rss_kib(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over pid and its descendants (from /proc).

    RSS counts pages shared between the forked workers once per process;
    PSS splits them between the sharers, so the PSS sum is the memory the
    tree really uses.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def run_certman(
    fleet: Path, roots: Path, out: Path, workers: int | None
) -> tuple[float, tuple[int, int], int, float]:
    """Time ``certman scan``; returns (seconds, peak tree (RSS, PSS) KiB, status, CPU seconds).

    CPU seconds are user + system time of certman's whole process tree
    (its workers are reaped by it, so RUSAGE_CHILDREN counts them).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    certman = [sys.executable, "-m", "certman"]
    cmd = [*certman, "scan", str(fleet), "--format", "jsonl", "--trust-store", str(roots)]
    if workers:
        cmd += ["--workers", str(workers)]
    peak = (0, 0)
    t0 = time.perf_counter()
    with open(out, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                rss, pss = _tree_rss_kib(proc.pid)
                peak = (max(peak[0], rss), max(peak[1], pss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = proc.wait()
        elapsed = time.perf_counter() - t0
        done.set()
        sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, peak, status, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="bundles in the fleet")
    parser.add_argument("--workers", type=int, default=None, help="certman --workers")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (kept)")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="certman-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        fleet = work / "fleet"
        if not fleet.exists():
            fleet = build_fleet(work, args.n)
            print(f"built {args.n} bundles in {time.perf_counter() - t0:.1f}s under {work}")
        roots = work / "roots.pem"
        base1, certs, cpu1 = baseline(fleet)  # also warms the page cache
        secs, peak_kib, status, cpu = run_certman(fleet, roots, work / "out.jsonl", args.workers)
        base2, _, cpu2 = baseline(fleet)
        base, base_cpu = min(base1, base2), min(cpu1, cpu2)
        sig_cpu, sig_count = signature_floor(fleet)
        with open(work / "out.jsonl", "rb") as fh:
            lines = sum(1 for _ in fh)
        children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"bundles: {args.n}  certificates parsed by baseline: {certs}  jsonl lines: {lines}")
        print(f"baseline (parse only, 1 core): {base:.2f}s  ({certs / base:,.0f} certs/s)")
        print(
            f"certman scan --format jsonl (workers={args.workers or os.cpu_count()}): "
            f"{secs:.2f}s  ({certs / secs:,.0f} certs/s, {args.n / secs:,.0f} bundles/s), "
            f"exit {status}"
        )
        print(f"ratio certman/baseline: {secs / base:.2f}  (target <= 1.2)")
        print(
            f"CPU time: certman tree {cpu:.2f}s vs baseline {base_cpu:.2f}s "
            f"(CPU ratio {cpu / base_cpu:.2f}; {cpu / args.n * 1e6:.0f} us CPU per bundle); "
            f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(
            f"peak RSS, certman process tree (sum): {peak_kib[0] / 1024:.0f} MB  "
            f"(target <= 200 MB); peak PSS sum: {peak_kib[1] / 1024:.0f} MB"
        )
        print(f"largest single process (getrusage children): {children_max / 1024:.0f} MB")
        cores = args.workers or os.cpu_count() or 1
        floor = (base_cpu + sig_cpu) / cores
        print(
            f"why: the {sig_count} leaf signature checks alone take {sig_cpu:.2f}s CPU "
            f"({sig_cpu / args.n * 1e6:.0f} us per bundle, {sig_cpu / base_cpu:.2f}x the whole "
            f"bare loop); parse + one verify spread over {cores} cores, with no other work, "
            f"would already be {floor:.2f}s = ratio {floor / base_cpu:.2f} by CPU"
        )
        print(
            f"certman's CPU per bundle beyond parse + verify: "
            f"{(cpu - base_cpu - sig_cpu) / args.n * 1e6:.0f} us (rules, chain, facts, "
            f"JSON, processes)"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
