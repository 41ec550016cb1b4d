"""Token validation, the in-memory and store-backed TokenStores, and TokenStoreSolver."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certman.challenges import (
    ChallengeTask,
    HTTP01Server,
    MemoryTokenStore,
    StoreTokenStore,
    TokenStore,
    TokenStoreSolver,
    is_valid_token,
    validate_token,
)
from certman.challenges.http01 import token_from_path
from certman.errors import ChallengeError
from certman.store import FileStore

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("token", ["a", "A-b_9", "x" * 256])
def test_valid_tokens(token: str) -> None:
    assert is_valid_token(token)
    assert validate_token(token) == token


@pytest.mark.parametrize(
    "token", ["", "x" * 257, "a.b", "a/b", "..", "a b", "a\n", "é", "a=", "%2e", None, 5]
)
def test_invalid_tokens(token: object) -> None:
    assert not is_valid_token(token)
    with pytest.raises(ChallengeError) as err:
        validate_token(token)  # type: ignore[arg-type]
    assert err.value.code == "challenge-bad-token"


@given(st.text(max_size=300))
def test_token_from_path_never_accepts_anything_unsafe(tail: str) -> None:
    token = token_from_path("/.well-known/acme-challenge/" + tail)
    if token is not None:
        assert token == tail
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
        assert 0 < len(token) <= 256


def test_memory_store_is_a_token_store_and_thread_safe() -> None:
    store = MemoryTokenStore()
    assert isinstance(store, TokenStore)

    def writer(i: int) -> None:
        for j in range(200):
            store.put(f"t{i}-{j}", f"v{i}-{j}")
            assert store.get(f"t{i}-{j}") == f"v{i}-{j}"
            store.delete(f"t{i}-{j}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 0
    store.delete("never-there")
    assert store.get("never-there") is None
    with pytest.raises(ChallengeError):
        store.put("../x", "v")


def task(token: str, challenge_type: str = "http-01") -> ChallengeTask:
    return ChallengeTask("example.org", "dns", challenge_type, token, f"{token}.thumb")


def test_token_store_solver() -> None:
    store = MemoryTokenStore()
    solver = TokenStoreSolver(store)
    solver.present([task("a"), task("b")])
    assert store.get("a") == "a.thumb" and store.get("b") == "b.thumb"
    solver.cleanup([task("a"), task("b"), task("gone")])
    assert len(store) == 0
    with pytest.raises(ChallengeError) as err:
        solver.present([task("c"), task("d", "dns-01")])
    assert err.value.code == "challenge-unsupported-type"
    assert store.get("c") is None  # all-or-nothing validation before publishing


WRITER = """
import sys
from certman.challenges import ChallengeTask, StoreTokenStore, TokenStoreSolver
from certman.store import FileStore
solver = TokenStoreSolver(StoreTokenStore(FileStore(sys.argv[1])))
t = ChallengeTask("example.org", "dns", "http-01", "from-other-process", "from-other-process.k")
solver.present([t])
print("published", flush=True)
sys.stdin.readline()
solver.cleanup([t])
print("withdrawn", flush=True)
"""


def test_file_store_tokens_shared_between_processes(tmp_path: Path) -> None:
    """A responder in this process answers a token another process published."""
    tokens = StoreTokenStore(FileStore(tmp_path / "home"))
    assert isinstance(tokens, TokenStore)
    import http.client

    with (
        HTTP01Server(tokens, "127.0.0.1", 0) as srv,
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "home")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None

        def fetch() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("GET", "/.well-known/acme-challenge/from-other-process")
            resp = conn.getresponse()
            out = resp.status, resp.read()
            conn.close()
            return out

        assert proc.stdout.readline().strip() == "published"
        assert fetch() == (200, b"from-other-process.k")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "withdrawn"
        assert fetch()[0] == 404
        proc.wait()
    assert tokens.get("../../etc/passwd") is None
