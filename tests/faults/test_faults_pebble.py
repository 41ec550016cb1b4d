"""Faults against a real Pebble: chaos nonces, a CA that stops answering,
SIGKILL at random moments, a full disk, and two issuers racing for one name.

The promise under test: a failed renewal never breaks the site (what ``live/``
points at is untouched and still matches its key), a crash never corrupts
the store (the next run completes), and failures are reported clearly.
Long cases are marked ``slow``; they still run in ``make test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certman.manager import CertificateManager, IssueRequest, SolverSpec
from certman.store import FileStore
from certman.testing import LocalPebble
from tests.conftest import running_pebble, serve_directory

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble()


def manager(home: Path, ca: LocalPebble, **kwargs: object) -> CertificateManager:
    return CertificateManager(
        FileStore(home),
        server=ca.directory_url,
        ca_bundle=ca.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", ca.http_port),
        **kwargs,  # type: ignore[arg-type]
    )


def issue(home: Path, ca: LocalPebble, names: list[str]) -> None:
    """Set up lineages through the library (the CLI is what is under test after)."""
    with manager(home, ca) as m:
        m.ensure_account(agree_tos=True)
        report = m.issue_many([IssueRequest(names=(n,)) for n in names])
        assert report.ok, report


def certman(home: Path, ca: LocalPebble, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "certman",
        "--home",
        str(home),
        "--server",
        ca.directory_url,
        "--ca-bundle",
        str(ca.ca_bundle),
        *args,
    ]


def run(
    home: Path, ca: LocalPebble, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
    return subprocess.run(
        certman(home, ca, *args), capture_output=True, text=True, env=env, timeout=timeout
    )


def live_state(home: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (live symlink target, cert bytes), checking each live cert parses
    and matches its private key."""
    out: dict[str, tuple[str, bytes]] = {}
    certs = home / "certs"
    if not certs.exists():
        return out
    for lineage in sorted(certs.iterdir()):
        live = lineage / "live"
        if not live.is_symlink():
            continue  # a lineage whose first version never completed
        target = os.readlink(live)
        cert_pem = (live / "cert.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), None)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        assert cert.public_key().public_bytes(enc, spki) == key.public_key().public_bytes(
            enc, spki
        ), f"{lineage.name}: live certificate does not match its private key"
        full = (live / "fullchain.pem").read_bytes()
        assert full.startswith(cert_pem), f"{lineage.name}: fullchain does not start with cert"
        assert len(x509.load_pem_x509_certificates(full)) >= 2
        out[lineage.name] = (target, cert_pem)
    return out


# -- 1. badNonce chaos ---------------------------------------------------------------


@pytest.mark.slow
def test_hundred_certificates_with_half_the_nonces_rejected(tmp_path: Path) -> None:
    for ca in running_pebble(nonce_reject=50):
        names = [f"nonce{i}.example" for i in range(100)]
        with manager(tmp_path / "home", ca) as m:
            m.ensure_account(agree_tos=True)
            report = m.issue_many([IssueRequest(names=(n,)) for n in names])
        failed = [(o.name, o.error_code, o.reason) for o in report.outcomes if not o.ok]
        assert not failed, failed
        assert report.ok
        state = live_state(tmp_path / "home")
        assert sorted(state) == sorted(names)


# -- 2. the CA stops answering in the middle of a renewal run ------------------------


@pytest.mark.slow
def test_ca_stopped_mid_renew_then_back(pebble: LocalPebble, tmp_path: Path) -> None:
    home = tmp_path / "home"
    names = [f"stop{i}.example" for i in range(50)]
    issue(home, pebble, names)
    before = live_state(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
    proc = subprocess.Popen(
        certman(home, pebble, "renew", "--force", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    paused = False
    try:
        # Stop the CA once the run is under way (a few renewals done).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = sum(1 for n in names if (home / "certs" / n / "archive" / "2").exists())
            if done >= 5:
                break
            time.sleep(0.05)
        pebble.pause()  # frozen: connections hang, nothing answers
        paused = True
        # Longer than certman's 10 s request time-out: requests in flight fail.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=14)
    finally:
        if paused:
            pebble.resume()
    out, _err = proc.communicate(timeout=300)
    report = json.loads(out)
    statuses = {c["name"]: c["status"] for c in report["certificates"]}
    failed = sorted(n for n, s in statuses.items() if s == "failed")
    assert failed, "the CA was stopped for 14 s: some renewals must have failed"
    assert proc.returncode == 1
    for c in report["certificates"]:
        if c["status"] == "failed":
            # A reason and a stable code, not a bare failure.
            assert c["reason"] and c["error_code"], c
            assert c["error_code"].startswith("acme-"), c
    after = live_state(home)
    for name in failed:  # nothing served was touched
        assert after[name] == before[name], name
    # The next run completes every one that failed.
    rerun = run(home, pebble, "renew", "--force", "--json", *failed)
    assert rerun.returncode == 0, rerun.stderr
    assert {c["status"] for c in json.loads(rerun.stdout)["certificates"]} == {"renewed"}
    final = live_state(home)
    assert sorted(final) == sorted(names)
    assert all(final[n] != before[n] for n in names)


# -- 3. SIGKILL at random moments -------------------------------------------------------


@pytest.mark.slow
def test_renew_killed_at_twenty_random_moments(pebble: LocalPebble, tmp_path: Path) -> None:
    home = tmp_path / "home"
    names = [f"kill{i}.example" for i in range(16)]
    issue(home, pebble, names)
    live_state(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
    # How long a whole run takes here, to spread the kills over it.
    start = time.monotonic()
    first = run(home, pebble, "renew", "--force", "--concurrency", "4")
    assert first.returncode == 0, first.stderr
    span = time.monotonic() - start
    seed = int(os.environ.get("CERTMAN_FAULT_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    killed_mid_run = attempts = 0
    partial_runs = 0  # kills after some lineages were renewed and before all were
    while killed_mid_run < 20 and attempts < 60:
        attempts += 1
        moment = rng.uniform(0.25 * span, span)  # the first quarter is mostly start-up
        versions_before = {n: max(map(int, _versions(home, n))) for n in names}
        proc = subprocess.Popen(
            certman(home, pebble, "renew", "--force", "--concurrency", "4"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.wait()
        # After each kill: every live certificate parses and matches its key.
        state = live_state(home)
        assert sorted(state) == sorted(names), f"seed {seed}, moment {moment:.3f}"
        advanced = sum(max(map(int, _versions(home, n))) > versions_before[n] for n in names)
        partial_runs += 0 < advanced < len(names)
    assert killed_mid_run == 20, f"seed {seed}: only {killed_mid_run} kills landed mid-run"
    # And a rerun completes.
    final = run(home, pebble, "renew", "--force", "--json")
    assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    assert {c["status"] for c in json.loads(final.stdout)["certificates"]} == {"renewed"}
    listing = run(home, pebble, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    print(
        f"SIGKILL faults: {killed_mid_run} kills mid-run in {attempts} attempts, "
        f"{partial_runs} after some renewals were stored and before all (seed {seed})"
    )


def _versions(home: Path, name: str) -> list[str]:
    archive = home / "certs" / name / "archive"
    return [p.name for p in archive.iterdir() if p.name.isdigit()]


# -- 4. a full disk ------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); see the ENOSPC seam test")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` up to ``leave`` free bytes."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * max(free - leave, 0))
    return filler


def test_full_disk_is_a_clear_error_and_keeps_the_certificate(
    pebble: LocalPebble, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        home = disk / "home"
        issue(home, pebble, ["full.example"])
        before = live_state(home)
        filler = fill(disk, 0)
        result = run(home, pebble, "renew", "--force")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        # The summary names the lineage and the cause.
        assert "1 failed" in result.stdout, result.stdout
        assert "No space left on device" in result.stdout, result.stdout
        as_json = run(home, pebble, "renew", "--force", "--json")
        assert as_json.returncode == 1
        (outcome,) = json.loads(as_json.stdout)["certificates"]
        assert outcome["status"] == "failed" and outcome["error_code"] == "store-io", outcome
        assert "No space left on device" in outcome["reason"], outcome
        print(f"full disk: certman renew said: {result.stdout.strip()}")
        assert live_state(home) == before  # the previous certificate is intact
        filler.unlink()
        again = run(home, pebble, "renew", "--force")
        assert again.returncode == 0, again.stderr
        after = live_state(home)
        assert after["full.example"] != before["full.example"]


# -- 5. two issuers racing for one name ----------------------------------------------------


@contextlib.contextmanager
def serve(root: Path, port: int) -> Iterator[None]:
    """A web server (as nginx would be) serving ``root`` where Pebble validates HTTP-01."""
    with serve_directory(root, port):
        yield


def test_two_issue_commands_for_one_name_make_one_order_and_lineage(
    pebble: LocalPebble, tmp_path: Path
) -> None:
    """Both processes can answer challenges (a shared web root), so only the
    lineage lock stands between them and two orders."""
    home = tmp_path / "home"
    www = tmp_path / "www"
    www.mkdir()
    reg = run(home, pebble, "account", "register", "--agree-tos")
    assert reg.returncode == 0, reg.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
    # The pre-hook runs with the lineage lock held: the winner waits in it
    # until the other process has finished, so the two certainly overlap.
    release = tmp_path / "release"
    hook = f"while [ ! -e {release} ]; do sleep 0.02; done"
    args = ["issue", "-d", "race.example", "--webroot", str(www), "--pre-hook", hook]
    log_before = len(pebble.pebble_log.read_bytes())
    with serve(www, pebble.http_port):
        procs = [
            subprocess.Popen(
                certman(home, pebble, *args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[0].wait(timeout=0.05)
            assert any(p.poll() is not None for p in procs), "both hold the lock?"
        finally:
            release.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    orders = pebble.pebble_log.read_bytes()[log_before:].count(b"Added order")
    assert orders == 1, (orders, results)
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    for code, _out, err in results:
        if code != 0:  # the loser says why, in one line
            assert code == 1 and err.count("\n") == 1 and "store-locked" in err, err
    lineages = [p.name for p in (home / "certs").iterdir()]
    assert lineages == ["race.example"], lineages
    versions = sorted(p.name for p in (home / "certs" / "race.example" / "archive").iterdir())
    assert versions == ["1"], (versions, results)
    live_state(home)


def test_pause_resume_and_stop_while_paused() -> None:
    """LocalPebble.pause/resume (used above), and stop() of a paused Pebble."""
    for ca in running_pebble():
        ca.pause()
        with pytest.raises(OSError):  # frozen: the directory does not answer
            urllib.request.build_opener(
                urllib.request.ProxyHandler({}),
                urllib.request.HTTPSHandler(
                    context=ssl.create_default_context(cafile=str(ca.ca_bundle))
                ),
            ).open(ca.directory_url, timeout=1)
        ca.resume()
        assert "BEGIN CERTIFICATE" in ca.root_pem()  # answers again
        ca.pause()
    # Leaving the generator ran stop() on the paused Pebble: both processes are gone.
    assert not ca.running
