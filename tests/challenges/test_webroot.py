"""WebrootSolver: files a real web server serves, modes, cleanup, planted symlinks refused."""

from __future__ import annotations

import http.client
import os
import stat
from pathlib import Path

import pytest

from certman.challenges import ChallengeTask, WebrootSolver
from certman.errors import ChallengeError
from tests.conftest import serve_directory


def task(token: str) -> ChallengeTask:
    return ChallengeTask("example.org", "dns", "http-01", token, f"{token}.thumbprint")


def fetch(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_present_serve_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    solver = WebrootSolver(root)
    assert solver.challenge_types == ("http-01",)
    solver.present([task("tok-1"), task("tok_2")])
    challenge_dir = root / ".well-known" / "acme-challenge"
    assert (challenge_dir / "tok-1").read_text() == "tok-1.thumbprint"
    assert mode(challenge_dir / "tok-1") == 0o644
    assert mode(challenge_dir) == 0o755 and mode(root / ".well-known") == 0o755
    assert sorted(os.listdir(challenge_dir)) == ["tok-1", "tok_2"]  # no temp debris
    assert solver.token_path("tok-1") == challenge_dir / "tok-1"

    with serve_directory(root) as port:
        assert fetch(port, "/.well-known/acme-challenge/tok-1") == (200, b"tok-1.thumbprint")

    solver.cleanup([task("tok-1")])
    assert not (challenge_dir / "tok-1").exists()
    assert challenge_dir.is_dir()  # tok_2 still out
    solver.cleanup([task("tok_2"), task("never-there")])
    assert not (root / ".well-known").exists()  # both dirs were ours: removed
    solver.cleanup([task("tok_2")])  # everything gone already: no error


def test_existing_directories_are_kept(tmp_path: Path) -> None:
    challenge_dir = tmp_path / ".well-known" / "acme-challenge"
    challenge_dir.mkdir(parents=True)
    (tmp_path / ".well-known" / "security.txt").write_text("contact")
    solver = WebrootSolver(tmp_path)
    solver.present([task("t")])
    solver.cleanup([task("t")])
    assert challenge_dir.is_dir()
    assert (tmp_path / ".well-known" / "security.txt").read_text() == "contact"


def test_webroot_itself_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    solver = WebrootSolver(tmp_path / "link")
    solver.present([task("t")])
    assert (real / ".well-known/acme-challenge/t").read_text() == "t.thumbprint"
    solver.cleanup([task("t")])


def test_missing_webroot(tmp_path: Path) -> None:
    with pytest.raises(ChallengeError) as err:
        WebrootSolver(tmp_path / "nope").present([task("t")])
    assert err.value.code == "challenge-webroot-missing"
    WebrootSolver(tmp_path / "nope").cleanup([task("t")])


@pytest.mark.parametrize("planted", [".well-known", ".well-known/acme-challenge"])
def test_planted_directory_symlink_refused(tmp_path: Path, planted: str) -> None:
    root = tmp_path / "www"
    (root / ".well-known").mkdir(parents=True)
    target = tmp_path / "target"
    target.mkdir()
    if planted == ".well-known":
        (root / ".well-known").rmdir()
    (root / planted).symlink_to(target)
    with pytest.raises(ChallengeError) as err:
        WebrootSolver(root).present([task("t")])
    assert err.value.code == "challenge-unsafe-path"
    assert planted in str(err.value)
    assert list(target.rglob("*")) == []


def test_planted_token_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    challenge_dir = tmp_path / "www" / ".well-known" / "acme-challenge"
    challenge_dir.mkdir(parents=True)
    (challenge_dir / "t").symlink_to(victim)
    solver = WebrootSolver(tmp_path / "www")
    solver.present([task("t")])
    assert victim.read_text() == "precious"
    assert not (challenge_dir / "t").is_symlink()
    assert (challenge_dir / "t").read_text() == "t.thumbprint"
    solver.cleanup([task("t")])
    assert victim.read_text() == "precious"


def test_refuses_other_types_and_bad_tokens(tmp_path: Path) -> None:
    solver = WebrootSolver(tmp_path)
    with pytest.raises(ChallengeError) as err:
        solver.present([ChallengeTask("example.org", "dns", "dns-01", "t", "v")])
    assert err.value.code == "challenge-unsupported-type"
    with pytest.raises(ChallengeError) as err:
        solver.present([task("../../etc/cron.d/x")])
    assert err.value.code == "challenge-bad-token"
    assert list(tmp_path.iterdir()) == []
