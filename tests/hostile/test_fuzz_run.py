"""A short, time-boxed run of benchmarks/fuzz_loaders.py inside the test suite.

The long runs (and their figures) are the benchmark's; here 10 seconds of the
mutation engine (no extra dependency) must find nothing and must actually
execute inputs, so the fuzz tool itself cannot rot.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ten_second_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fuzz_loaders.py"),
            "--seconds",
            "10",
            "--engine",
            "mutate",
            "--crash-dir",
            str(tmp_path / "crashes"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FUZZ_SEED": "20261122", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"executions=(\d+) .* crashes=(\d+)", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) > 1000 and match.group(2) == "0"
    print(proc.stdout.strip().splitlines()[-1])
