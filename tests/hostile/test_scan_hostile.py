"""``certman scan`` over a directory of hostile files, as a real process.

A fleet scan catches anything a bundle throws (one odd file must not end an
audit of 100,000), which would also hide an exception escaping the loaders:
such a file shows up as ``error_code: "internal"``. So: 400 mutants of valid
bundles in every format plus ASN.1 bombs, scanned by worker processes; every
file gives exactly one JSON line, none of them an internal error, and the
exit status says findings/errors (1), not a crash.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from .corpus import build_seeds, lying_length, nested_indefinite, nested_sequences, pem_wrap


def _mutant(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not buf:
            break
        i = rng.randrange(len(buf))
        op = rng.randrange(5)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.choice((0x00, 0x30, 0x80, 0x84, 0xFF))
        elif op == 2:
            del buf[i : i + rng.randint(1, 32)]
        elif op == 3:
            del buf[i:]
        else:
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf)


def test_scan_of_hostile_files_has_no_internal_errors(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    seeds = build_seeds()
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    count = 0
    for i in range(400):
        seed = seeds[i % len(seeds)]
        (fleet / f"m{i:03d}.bin").write_bytes(_mutant(rng, seed.data))
        count += 1
    for name, data in {
        "nested.der": nested_sequences(50_000),
        "nested.pem": pem_wrap(nested_sequences(50_000)),
        "indefinite.der": nested_indefinite(50_000),
        "lying.der": lying_length(2**62),
        "begins.pem": b"-----BEGIN CERTIFICATE-----\n" * 100_000,
        "empty.pem": b"",
    }.items():
        (fleet / name).write_bytes(data)
        count += 1
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "certman",
            "scan",
            str(fleet),
            "--format",
            "jsonl",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == count
    assert len({line["source"] for line in lines}) == count
    internal = [line for line in lines if line.get("error_code") == "internal"]
    assert not internal, internal[:3]
    assert {line["status"] for line in lines} <= {"ok", "error"}
    # The mutants are not all rejected: some still load and are judged.
    assert any(line["status"] == "ok" for line in lines)
