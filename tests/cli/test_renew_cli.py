"""`certman renew` as real processes: concurrency between processes, crashes, hooks, dry runs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certman.manager import CertificateManager, IssueRequest, SolverSpec
from certman.store import FileStore
from tests.cli.conftest import BLOCKED, Certman, snapshot
from tests.conftest import serve_directory

pytestmark = pytest.mark.pebble


def _issue(certman: Certman, names: list[str], **kwargs: object) -> FileStore:
    """Set up lineages quickly through the library (the CLI is what is under test)."""
    store = FileStore(certman.home)
    with CertificateManager(
        store,
        server=certman.pebble.directory_url,
        ca_bundle=certman.pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", certman.pebble.http_port),
    ) as manager:
        manager.ensure_account(agree_tos=True)
        report = manager.issue_many([IssueRequest(names=(n,), **kwargs) for n in names])  # type: ignore[arg-type]
        assert report.ok, report
    return store


def _archive(home: Path, name: str) -> list[str]:
    return sorted(p.name for p in (home / "certs" / name / "archive").iterdir())


def test_renew_summary_and_json(certman: Certman) -> None:
    _issue(certman, ["r1.example", "r2.example"])
    out = certman.run("renew")
    assert out.stdout.startswith("0 renewed, 2 not due, 0 failed")
    forced = certman.run("renew", "r2.example", "--force", "--json")
    data = json.loads(forced.stdout)
    assert data["ok"] and data["counts"] == {"renewed": 1}
    (cert,) = data["certificates"]
    assert cert["name"] == "r2.example" and cert["status"] == "renewed" and cert["version"] == 2
    assert _archive(certman.home, "r1.example") == ["1"]
    assert _archive(certman.home, "r2.example") == ["1", "2"]
    assert forced.stderr == ""  # no progress drawn when stderr is not a terminal


@contextlib.contextmanager
def _serve(root: Path, port: int) -> Iterator[None]:
    """A web server (as nginx would be) serving ``root`` on Pebble's HTTP-01 port."""
    root.mkdir(exist_ok=True)
    with serve_directory(root, port):
        yield


def test_two_processes_at_once_renew_each_certificate_once(
    certman: Certman, tmp_path: Path
) -> None:
    # Two renewers share the store; the challenges are answered through a
    # webroot both write into (two standalone responders could not both bind
    # the one port).
    names = [f"both{i}.example" for i in range(12)]
    store = _issue(certman, names)
    webroot = tmp_path / "webroot"
    for name in names:
        meta = store.load_meta(name)
        store.save_meta(
            dataclasses.replace(meta, solver="webroot", solver_options={"path": str(webroot)})
        )
    # A start barrier: each process's pre hook (run once, just before its
    # first renewal) waits until both processes have reached it, so neither
    # renews anything before the other has started its run.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait_both = (
        f"touch {barrier}/$PPID; i=0; "
        f'while [ "$(ls {barrier} | wc -l)" -lt 2 ] && [ $i -lt 1000 ]; '
        "do sleep 0.01; i=$((i+1)); done"
    )
    with _serve(webroot, certman.pebble.http_port):
        procs = [
            certman.popen(
                "renew", "--force", "--json", "--concurrency", "4", "--pre-hook", wait_both
            )
            for _ in range(2)
        ]
        reports = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stdout + stderr
            reports.append(json.loads(stdout))
    assert len(list(barrier.iterdir())) == 2  # both processes took part
    renewed = [c["name"] for r in reports for c in r["certificates"] if c["status"] == "renewed"]
    assert sorted(renewed) == sorted(names)
    others = {c["status"] for r in reports for c in r["certificates"] if c["status"] != "renewed"}
    assert others <= {"locked", "skipped"}
    for name in names:
        assert _archive(certman.home, name) == ["1", "2"], name


def test_killed_between_archive_and_live_switch(certman: Certman, tmp_path: Path) -> None:
    store = _issue(certman, ["killed.example"])
    live = certman.home / "certs" / "killed.example" / "live"
    old = (live / "fullchain.pem").read_bytes()
    runner = tmp_path / "die_at_switch.py"
    runner.write_text(
        "import os, signal, sys\n"
        "from certman.store.files import FileStore\n"
        "def die(self, name, version):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "FileStore._switch_live = die\n"
        "from certman.cli import main\n"
        "main(sys.argv[1:], prog_name='certman')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(runner), *certman.global_args(), "renew", "--force"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert (live / "fullchain.pem").read_bytes() == old  # the old certificate is still served
    assert store.load_live("killed.example").version == 1
    assert _archive(certman.home, "killed.example") == ["1", "2"]  # written, never live

    certman.run("renew", "--force")
    assert store.load_live("killed.example").version == 3
    assert (live / "fullchain.pem").read_bytes() != old
    assert json.loads(certman.run("list", "--json").stdout)[0]["last_error"] is None


def test_hooks_env_and_a_failing_hook(certman: Certman, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    store = _issue(certman, ["hook-a.example", "hook-b.example"])
    meta = store.load_meta("hook-b.example")
    store.save_meta(dataclasses.replace(meta, deploy_hooks=("echo broken >&2; exit 7",)))
    proc = certman.run(
        "renew",
        "--force",
        "--pre-hook",
        f"echo pre >> {log}",
        "--deploy-hook",
        f'echo "$CERTMAN_NAME $CERTMAN_DOMAINS $CERTMAN_PRIVKEY" >> {log}',
        "--post-hook",
        f"echo post >> {log}",
    )
    assert proc.stdout.startswith("2 renewed")
    assert "hook-b.example failed with exit status 7: broken" in proc.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "pre" and lines[-1] == "post" and len(lines) == 4
    live_a = certman.home / "certs" / "hook-a.example" / "live"
    assert f"hook-a.example hook-a.example {live_a}/privkey.pem" in lines
    assert any(line.startswith("hook-b.example hook-b.example ") for line in lines)


def test_hooks_given_at_issue_are_reused_by_renew(certman: Certman, tmp_path: Path) -> None:
    log = tmp_path / "deploy.log"
    certman.run(
        "issue",
        "-d",
        "stored.example",
        *certman.listen,
        "--agree-tos",
        "--deploy-hook",
        f"echo $CERTMAN_NAME >> {log}",
    )
    assert log.read_text().splitlines() == ["stored.example"]
    certman.run("renew", "--force")
    assert log.read_text().splitlines() == ["stored.example", "stored.example"]


def test_dry_run_stores_nothing(certman: Certman, tmp_path: Path) -> None:
    marker = tmp_path / "hook"
    _issue(certman, ["dry1.example", "dry2.example"])
    before = snapshot(certman.home)
    proc = certman.run("renew", "--force", "--dry-run", "--deploy-hook", f"touch {marker}")
    assert proc.stdout.startswith("2 would be renewed (dry run)")
    assert snapshot(certman.home) == before
    assert not marker.exists()


def test_a_failed_renewal_exits_1_and_shows_in_list(certman: Certman, tmp_path: Path) -> None:
    store = _issue(certman, ["ok.example", "broken.example"])
    # broken.example now also asks for a name the CA refuses.
    meta = store.load_meta("broken.example")
    store.save_meta(dataclasses.replace(meta, names=("broken.example", BLOCKED)))
    old = store.load_live("broken.example").files
    proc = certman.run("renew", "--force", check=False)
    assert proc.returncode == 1
    assert proc.stdout.startswith("1 renewed, 0 not due, 1 failed")
    assert "FAILED    broken.example" in proc.stdout
    assert store.load_live("broken.example").files == old
    rows = {r["name"]: r for r in json.loads(certman.run("list", "--json").stdout)}
    assert rows["broken.example"]["last_error"]
    assert rows["broken.example"]["consecutive_failures"] == 1
    assert rows["ok.example"]["last_error"] is None
    table = certman.run("list").stdout
    assert "broken.example: last error (1 in a row)" in table


def test_progress_is_drawn_only_on_a_terminal(certman: Certman) -> None:
    _issue(certman, ["tty1.example", "tty2.example"])
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            certman.command("renew", "--force"),
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=120,
        )
        os.close(slave)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the pty's other side is closed
            while chunk := os.read(master, 4096):
                drawn += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"[2/2]" in drawn and b"renewed" in drawn
    assert "[2/2]" not in proc.stdout
