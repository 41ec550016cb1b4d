"""Huge and deeply nested input: the loaders stay within bounded memory and finish.

Each case runs in a fresh subprocess (cryptography's Rust allocations are
invisible to tracemalloc, so the peak RSS of the process is what is
measured): peak RSS growth while loading must stay under a small multiple
of the input size, repeated loads must not grow (no leak, bounded caches),
and a crash of the parser (stack overflow on deep nesting) would show as a
non-zero exit. The subprocess has a generous time-out as a hang detector
only; nothing is asserted about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

CASES = {
    # 10 MB (the file cap) of DER-looking junk.
    "junk-10mb": "b'\\x30\\x84\\x00\\xa0\\x00\\x00' + bytes(range(256)) * (10 * 4096)",
    # 10 MB of BEGIN lines without END (quadratic for a naive block regex).
    "begin-lines-10mb": "b'-----BEGIN CERTIFICATE-----\\n' * (10 * 1024 * 1024 // 28)",
    # One PEM block with a 10 MB base64 body.
    "one-huge-block": (
        "b'-----BEGIN CERTIFICATE-----\\n' + b'QUFB' * (10 * 1024 * 1024 // 4)"
        " + b'\\n-----END CERTIFICATE-----\\n'"
    ),
    # 50,000 empty certificate blocks.
    "many-blocks": "b'-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n' * 50000",
    # 500 copies of a real chain (1,500 certificates) in one bundle.
    "many-real-certs": "corpus.build_seeds()[0].data * 500",
    # SEQUENCE nested 200,000 deep (definite lengths), raw and in PEM.
    "nested-200k": "corpus.nested_sequences(200_000)",
    "nested-200k-pem": "corpus.pem_wrap(corpus.nested_sequences(200_000))",
    # Indefinite-length (BER) nesting, 500,000 deep.
    "indefinite-500k": "corpus.nested_indefinite(500_000)",
    # A length field claiming 2**62 bytes.
    "lying-length": "corpus.lying_length(2**62) * 1000",
}

SCRIPT = """
import json, resource, sys
sys.path.insert(0, {here!r})
import corpus
from certman.errors import InspectorError
from certman.inspector import inspect, load_bundle
from certman.inspector.chain import TrustStore

def peak_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

data = {expr}
store = TrustStore(())

def once():
    try:
        bundle = load_bundle(data, source="<huge>")
    except InspectorError as exc:
        return exc.code
    inspect(bundle, now=corpus.NOW, store=store)
    return "ok:%d" % len(bundle.certificates)

before = peak_kb()
result = once()
first = peak_kb()
for _ in range(2):
    once()
print(json.dumps({{"size": len(data), "result": result, "before": before,
                  "first": first, "after": peak_kb()}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_huge_and_nested_input_is_bounded(case: str) -> None:
    script = SCRIPT.format(here=str(HERE), expr=CASES[case])
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    size_kb = out["size"] // 1024
    growth = out["first"] - out["before"]
    # Loading may hold the input, one decoded copy and the parsed objects:
    # a few times the input, never unbounded.
    assert growth <= 4 * size_kb + 64 * 1024, out
    # Two more loads of the same input: no leak, caches bounded.
    assert out["after"] - out["first"] <= max(size_kb, 16 * 1024), out
    if case.startswith(("nested", "indefinite", "lying", "junk", "begin")):
        assert not out["result"].startswith("ok"), out
