"""The cluster commands as real processes: db, serve-http01, export, migrate."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cluster_helpers import start_responder
from localpg import LocalPostgres

from certman.store import AccountRecord, CertificateFiles, CertificateMeta, FileStore
from certman.store.postgres import SCHEMA_VERSION, PostgresStore

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
DIRECTORY = "https://127.0.0.1:14000/dir"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def certman(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certman", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def files(n: int, name: str = "a.example") -> CertificateFiles:
    return CertificateFiles.from_parts(
        f"CERT {name} {n}\n".encode(), b"CHAIN\n", f"KEY {name} {n}\n".encode()
    )


# -- db -----------------------------------------------------------------------------


def test_db_upgrade_and_status(pg_url: str, tmp_path: Path) -> None:
    status = certman("db", "status", "--store", pg_url)
    assert status.returncode == 1
    assert "version 0" in status.stdout and "certman db upgrade" in status.stdout

    # Other commands refuse a database without the schema, in one line.
    listing = certman("--store", pg_url, "export", "--to", str(tmp_path / "x"))
    assert listing.returncode == 1
    assert "store-schema-missing" in listing.stderr and "Traceback" not in listing.stderr
    assert not (tmp_path / "x").exists()

    up = certman("db", "upgrade", "--store", pg_url)
    assert up.returncode == 0, up.stderr
    assert f"upgraded from version 0 to {SCHEMA_VERSION}" in up.stdout
    again = certman("--store", pg_url, "db", "upgrade", "--json")  # global --store works too
    assert json.loads(again.stdout)["from"] == SCHEMA_VERSION

    ok = certman("db", "status", "--json", env={"CERTMAN_STORE": pg_url})
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["up_to_date"] is True and doc["counts"]["certificates"] == 0


def test_db_commands_need_postgres_and_a_reachable_server(tmp_path: Path) -> None:
    usage = certman("db", "status", "--store", str(tmp_path))
    assert usage.returncode == 2 and "postgresql://" in usage.stderr
    down = certman("db", "status", "--store", "postgresql://u:pw@127.0.0.1:1/x")
    assert down.returncode == 1
    assert "store-unavailable" in down.stderr and "pw" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


# -- serve-http01 ---------------------------------------------------------------------------


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@contextlib.contextmanager
def _responder(url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A serve-http01 process on a free port; killed if the test fails before it stops it."""
    responder = start_responder(url, "127.0.0.1", 0)
    try:
        yield responder.proc, responder.address
    finally:
        if responder.proc.poll() is None:
            responder.proc.kill()
            responder.proc.communicate()


def test_serve_http01_answers_tokens_from_the_store(pg_store: PostgresStore) -> None:
    with _responder(pg_store.url) as (proc, address):
        base = f"http://{address}/.well-known/acme-challenge/"
        assert _get(base + "tok-1")[0] == 404
        pg_store.put_token("tok-1", "tok-1.thumb")  # published by another node
        assert _get(base + "tok-1") == (200, b"tok-1.thumb")
        assert _get(base + "tok-1") == (200, b"tok-1.thumb")
        pg_store.delete_token("tok-1")
        # Gone once the NOTIFY arrives (milliseconds), and in any case once the
        # cache entry's 1 s lifetime ends; a loaded CI machine may take a while.
        deadline = time.monotonic() + 30
        while _get(base + "tok-1")[0] != 404:
            assert time.monotonic() < deadline, "a withdrawn token is still served"
        # ...and it stays gone.
        assert {_get(base + "tok-1")[0] for _ in range(50)} == {404}
        assert _get(f"http://{address}/other")[0] == 404
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["served"] >= 2 and summary["lookups"] >= 4


# -- export ---------------------------------------------------------------------------------


def test_export_writes_live_files_atomically_and_hooks_on_change(
    pg_store: PostgresStore, tmp_path: Path
) -> None:
    dest = tmp_path / "export"
    marker = tmp_path / "hook.log"
    hook = f'echo "$CERTMAN_CHANGED" >> {marker}'
    pg_store.save_certificate("a.example", files(1))
    pg_store.save_certificate("b.example", files(1, "b.example"))

    def run() -> subprocess.CompletedProcess[str]:
        return certman(
            "export", "--store", pg_store.url, "--to", str(dest), "--deploy-hook", hook, "--json"
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] == ["a.example", "b.example"]
    live = dest / "certs" / "a.example" / "live"
    assert os.readlink(live) == "archive/1"
    assert (live / "fullchain.pem").read_bytes() == b"CERT a.example 1\nCHAIN\n"
    assert (live / "privkey.pem").read_bytes() == b"KEY a.example 1\n"
    assert stat.S_IMODE((live / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "certs" / "a.example").stat().st_mode) == 0o700
    assert marker.read_text() == "a.example b.example\n"

    second = run()
    assert json.loads(second.stdout)["changed"] == []
    assert marker.read_text() == "a.example b.example\n"  # no hook: nothing changed

    for n in (2, 3):
        pg_store.save_certificate("a.example", files(n))
        assert json.loads(run().stdout)["changed"] == ["a.example"]
    assert os.readlink(live) == "archive/3"
    assert (live / "cert.pem").read_bytes() == b"CERT a.example 3\n"
    # The previous version stays for readers in flight; older ones go.
    archive = sorted(p.name for p in (dest / "certs" / "a.example" / "archive").iterdir())
    assert archive == ["2", "3"]
    assert marker.read_text().splitlines() == ["a.example b.example", "a.example", "a.example"]

    failing = certman(
        "export", "--store", pg_store.url, "--to", str(dest), "--deploy-hook", "exit 3"
    )
    assert failing.returncode == 0  # nothing changed, so the hook did not run
    pg_store.save_certificate("b.example", files(2, "b.example"))
    failing = certman(
        "export", "--store", pg_store.url, "--to", str(dest), "--deploy-hook", "exit 3"
    )
    assert failing.returncode == 1 and "exit 3" in failing.stderr


# -- migrate --------------------------------------------------------------------------------


def _filestore(root: Path) -> FileStore:
    fs = FileStore(root)
    a1 = AccountRecord("1", DIRECTORY, "https://x/acct/1", created_at=NOW)
    a2 = AccountRecord("2", DIRECTORY, "https://x/acct/2", created_at=NOW, status="deactivated")
    fs.save_account(a1, b"OLD KEY 1")
    fs.save_account_key(DIRECTORY, "1", b"KEY 1")  # after a rollover
    fs.save_account(a2, b"KEY 2")
    meta = CertificateMeta(name="a.example", names=("a.example",), created_at=NOW, serial="1")
    fs.save_certificate("a.example", files(1), meta)
    fs.save_certificate("a.example", files(2))
    fs.save_certificate("b.example", files(1, "b.example"))
    fs.save_meta(CertificateMeta(name="c.example", names=("c.example",), last_error="refused"))
    return fs


def test_migrate_loses_nothing_and_is_idempotent(pg_store: PostgresStore, tmp_path: Path) -> None:
    fs = _filestore(tmp_path / "home")
    result = certman("migrate", "--from", str(fs.root), "--to", pg_store.url, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["versions"] == {"copied": 3, "unchanged": 0}
    assert doc["accounts"]["copied"] == 2 and doc["lineages"] == 3

    assert pg_store.list_accounts() == fs.list_accounts()
    assert pg_store.load_account_key(DIRECTORY, "1") == b"KEY 1"
    assert pg_store.load_previous_account_key(DIRECTORY, "1") == b"OLD KEY 1"
    assert pg_store.list_certificates() == fs.list_certificates() == ["a.example", "b.example"]
    for name in ("a.example", "b.example"):
        assert pg_store.list_versions(name) == fs.list_versions(name)
        assert pg_store.load_live(name).files == fs.load_live(name).files
        assert pg_store.load_live(name).version == fs.load_live(name).version
        for v in fs.list_versions(name):
            assert pg_store.load_version(name, v).files == fs.load_version(name, v).files
    for name in ("a.example", "b.example", "c.example"):
        assert pg_store.find_meta(name) == fs.find_meta(name)

    again = certman("migrate", "--from", str(fs.root), "--to", pg_store.url, "--json")
    doc = json.loads(again.stdout)
    assert doc["versions"] == {"copied": 0, "unchanged": 3}
    assert doc["accounts"] == {"copied": 0, "unchanged": 2}
    assert doc["meta"]["copied"] == 0

    # New work in the FileStore migrates on the next run; a clash is refused.
    fs.save_certificate("b.example", files(2, "b.example"))
    meta = fs.load_meta("a.example")
    fs.save_meta(replace(meta, consecutive_failures=1))
    third = certman("migrate", "--from", str(fs.root), "--to", pg_store.url)
    assert third.returncode == 0, third.stderr
    assert pg_store.load_live("b.example").files == files(2, "b.example")
    assert pg_store.load_meta("a.example").consecutive_failures == 1
    pg_store.save_certificate("c.example", files(9, "c.example"))
    fs.save_certificate("c.example", files(1, "c.example"))
    clash = certman("migrate", "--from", str(fs.root), "--to", pg_store.url)
    assert clash.returncode == 1 and "store-conflict" in clash.stderr
    assert pg_store.load_live("c.example").files == files(9, "c.example")


@pytest.mark.parametrize("args", [["--to", "/tmp/x"], ["--to", "mysql://x"]])
def test_migrate_needs_a_postgres_target(tmp_path: Path, args: list[str]) -> None:
    result = certman("migrate", "--from", str(tmp_path), *args)
    assert result.returncode == 2 and "postgresql://" in result.stderr


def test_serve_http01_survives_the_database_going_away(
    pg_store: PostgresStore, pg_server: LocalPostgres
) -> None:
    with _responder(pg_store.url) as (proc, address):
        base = f"http://{address}/.well-known/acme-challenge/"
        pg_store.put_token("tok-2", "tok-2.thumb")
        assert _get(base + "tok-2") == (200, b"tok-2.thumb")
        pg_server.stop()
        try:
            # Unreadable store: "not found" (the CA retries later), not a crash.
            assert all(_get(base + f"tok-{i}")[0] == 404 for i in range(3, 6))
        finally:
            pg_server.start()
        pg_store.put_token("tok-7", "tok-7.thumb")
        assert _get(base + "tok-7") == (200, b"tok-7.thumb")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "store-unavailable" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["errors"] == 3 and summary["served"] == 2
