"""Time-boxed fuzz run of the inspector's loaders (PEM, DER, PKCS#7, PKCS#12).

    .venv/bin/python benchmarks/fuzz_loaders.py [--seconds 60] [--engine atheris|mutate]

The property is the one of tests/hostile/test_loaders_hypothesis.py: for any
bytes, ``load_bundle`` returns a bundle or raises ``InspectorError``, and
``inspect`` of what loaded raises nothing else. The corpus is seeded with
valid bundles in every format (tests/hostile/corpus.py).

Engines: ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``;
certman's Python code is instrumented, cryptography's Rust parser is not)
or ``mutate`` (a plain random mutation loop over the seeds, no extra
dependency). The default is atheris when it is installed. Prints the
executions, the time and any input that broke the property (saved under
``--crash-dir``); exit status 1 if one did.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "hostile"))
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402


def _target() -> object:
    from certman.errors import InspectorError
    from certman.inspector import inspect, load_bundle
    from certman.inspector.chain import TrustStore

    store = TrustStore(())

    def one(data: bytes) -> None:
        password = corpus.PASSWORD if data[:1] == b"\x30" and len(data) % 2 else None
        try:
            bundle = load_bundle(data, source="<fuzz>", password=password)
        except InspectorError:
            return
        try:
            inspect(bundle, now=corpus.NOW, store=store)
        except InspectorError:
            return

    return one


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            buf += rng.randbytes(rng.randint(1, 32))
            continue
        i = rng.randrange(len(buf))
        op = rng.randrange(8)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.choice((0x00, 0x30, 0x80, 0x81, 0x82, 0x84, 0xFF, 0x7F, 0xA0, 0x02))
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[i : i + rng.randint(1, 64)]
        elif op == 4:
            del buf[i:]
        elif op == 5:
            j = min(len(buf), i + rng.randint(1, 256))
            buf[j:j] = buf[i:j]
        elif op == 6:
            other = rng.choice(pool)
            k = rng.randrange(len(other) + 1)
            buf[i:] = other[k:]
        else:
            buf[i : i + 1] = b"\x84\x7f\xff\xff\xff"
    return bytes(buf)


def run_mutate(seconds: float, crash_dir: Path) -> int:
    one = _target()
    seeds = [s.data for s in corpus.build_seeds()]
    seeds += [corpus.pem_wrap(s) for s in seeds if s[:1] == b"\x30"]
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "0")) or None)
    pool = list(seeds)
    runs = crashes = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        data = _mutate(rng, rng.choice(pool), pool)
        runs += 1
        try:
            one(data)  # type: ignore[operator]
        except Exception as exc:  # that is what we are looking for
            crashes += 1
            crash_dir.mkdir(parents=True, exist_ok=True)
            path = crash_dir / f"crash-{runs}.bin"
            path.write_bytes(data)
            print(f"PROPERTY BROKEN: {type(exc).__name__}: {exc} (input saved to {path})")
        if runs % 512 == 0 and len(pool) < 4096:
            pool.append(data)  # keep some mutants as new parents
    elapsed = time.monotonic() - start
    print(
        f"engine=mutate executions={runs} seconds={elapsed:.1f} "
        f"exec_per_s={runs / elapsed:.0f} crashes={crashes}"
    )
    return 1 if crashes else 0


def atheris_child(seconds: int, corpus_dir: str, crash_dir: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["certman"]):
        one = _target()

    def test_one_input(data: bytes) -> None:
        one(data)  # type: ignore[operator]

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={seconds}",
            f"-artifact_prefix={crash_dir}/",
            "-rss_limit_mb=2048",
            "-max_len=65536",
            corpus_dir,
        ],
        test_one_input,
    )
    atheris.Fuzz()


def run_atheris(seconds: int, crash_dir: Path) -> int:
    crash_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="certman-fuzz-") as tmp:
        for seed in corpus.build_seeds():
            (Path(tmp) / seed.name).write_bytes(seed.data)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--atheris-child", str(seconds), tmp, str(crash_dir)],
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - start
    log = proc.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    last = re.findall(r"^#(\d+)\s", log, re.MULTILINE)
    runs = int(done.group(1)) if done else int(last[-1]) if last else 0
    cov = re.findall(r"cov: (\d+)", log)
    broken = proc.returncode != 0
    if broken:
        # atheris prints the uncaught exception and libFuzzer its summary.
        print((proc.stdout + log)[-6000:])
    print(
        f"engine=atheris executions={runs} seconds={elapsed:.1f} "
        f"exec_per_s={runs / max(elapsed, 1e-9):.0f} coverage_edges={cov[-1] if cov else '?'} "
        f"crashes={1 if broken else 0}"
    )
    return 1 if broken else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--atheris-child":
        atheris_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=["atheris", "mutate"])
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    args = parser.parse_args()
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "mutate"
        else:
            engine = "atheris"
    if engine == "atheris":
        return run_atheris(args.seconds, args.crash_dir)
    return run_mutate(args.seconds, args.crash_dir)


if __name__ == "__main__":
    sys.exit(main())
