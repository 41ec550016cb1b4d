"""examples/find_distrusted.py runs end to end on its demo database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "find_distrusted.py"


def test_find_distrusted_demo() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--workers", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert out.count("WoSign and StartCom") == 3 and out.count("Entrust and AffirmTrust") == 3
    assert "shop0.demo.example" not in out  # customers of a trusted CA are not listed
    assert "10 customers checked: 6 on distrusted CAs, 1 unreadable" in out
    assert "broken.example: unreadable certificate (truncated-pem)" in out
