"""The cluster for real: PostgreSQL + Pebble + worker and responder processes.

The big one: 3 renewal workers (``certman renew --store URL``) and 2
responders (``certman serve-http01``) over one store issue and renew
``CERTMAN_CLUSTER_N`` (default 300) certificates; one worker is SIGKILLed
midway and the run still completes; every certificate ends with exactly two
versions (one issuance, one renewal) and every serial is distinct.

Then the database going away mid-run: the worker fails with one clear
error per certificate, no half-written certificate is visible after the
restart, and the next run finishes the job.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from cluster_helpers import (
    Responder,
    env,
    issue_workers,
    make_all_due,
    register,
    renew_workers,
    responder_hosts,
    route_names,
    split,
    start_responder,
    versions_by_name,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from localpg import LocalPostgres

from certman.errors import CertmanError, ConfigError
from certman.manager import SolverSpec
from certman.store.postgres import PostgresStore
from certman.testing import AriServer, LocalPebble
from tests.conftest import require_tool

pytestmark = [pytest.mark.pebble, pytest.mark.postgres, pytest.mark.slow]

N = int(os.environ.get("CERTMAN_CLUSTER_N", "300"))


class PebbleWedged(Exception):
    """Pebble stopped answering (see ``_pebble_alive``): no conclusion about certman."""


def _pebble_alive(pebble: LocalPebble) -> bool:
    """Whether Pebble's store still answers.

    Pebble 2.4.0 has a lock-order inversion in its in-memory store (the
    authorization handler takes an authz lock then the store's read lock;
    new orders take the store's read lock then authz locks); with a writer
    queued in between, every request that touches the store then hangs.
    The management API reads the same store, so a lookup of an unknown
    serial answers 404 at once on a live Pebble and times out on a wedged one.
    """
    try:
        pebble.cert_status("1")
    except CertmanError as exc:
        return exc.details.get("status") == 404
    return True


def _run_cluster(
    pg_server: LocalPostgres,
    scenario: Callable[[LocalPebble, AriServer, PostgresStore], None],
) -> None:
    """Run ``scenario`` on a fresh Pebble, ARI stub and schema.

    If it fails *and* Pebble turns out to be wedged, the failure says nothing
    about certman: run it once more from scratch, and say so on stdout.
    """
    require_tool("pebble", package="pebble")
    require_tool("pebble-challtestsrv", package="pebble")
    for attempt in (1, 2):
        pg_server.start()
        store = PostgresStore(pg_server.new_schema_url())
        store.upgrade()
        # No authorization reuse: every order is validated, so every order's
        # challenge is really answered by a responder.
        with (
            LocalPebble(authz_reuse=0) as pebble,
            AriServer(
                upstream_directory=pebble.directory_url, upstream_ca_bundle=pebble.ca_bundle
            ) as ari,
        ):
            try:
                scenario(pebble, ari, store)
                return
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                if attempt == 2 or _pebble_alive(pebble):
                    raise
                print(f"Pebble deadlocked ({type(exc).__name__}); running the scenario again")
            finally:
                _kill_leftovers()
                store.close()


#: Whole-phase limits. A phase takes ~10 s here; Pebble 2.4.0 can deadlock
#: under many concurrent orders (every newOrder then hangs): fail, don't hang.
PHASE_TIMEOUT = 180.0

_started: list[subprocess.Popen[str]] = []


def _kill_leftovers() -> None:
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    yield
    _kill_leftovers()


def _track(procs: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    _started.extend(procs)
    return procs


def _wait(
    procs: list[subprocess.Popen[str]], timeout: float = PHASE_TIMEOUT
) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        out.append((proc.returncode, stdout, stderr))
    return out


def _live_is_whole(store: PostgresStore, name: str) -> None:
    """The live version is a parseable certificate whose key matches it."""
    live = store.load_live(name).files
    cert = x509.load_pem_x509_certificate(live.cert_pem)
    key = serialization.load_pem_private_key(live.privkey_pem, password=None)
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert live.fullchain_pem.startswith(live.cert_pem.rstrip(b"\n"))
    assert name in [
        n.value for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ]


def test_three_workers_two_responders_issue_and_renew(pg_server: LocalPostgres) -> None:
    _run_cluster(pg_server, _three_workers_two_responders)


def _three_workers_two_responders(
    pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore
) -> None:
    url, server, bundle = pg_store.url, ari.directory_url, str(pebble.ca_bundle)
    names = [f"c{i:04d}.cluster.test" for i in range(N)]
    hosts = responder_hosts(2)
    route_names(pebble, names, hosts)
    responders: list[Responder] = [start_responder(url, h, pebble.http_port) for h in hosts]
    try:
        register(url, server, bundle)

        # -- issue: three processes, a third of the names each ------------------
        issued = _wait(_track(issue_workers(url, server, bundle, split(names, 3))))
        for rc, out, err in issued:
            assert rc == 0, f"issue worker failed: {out}\n{err[-3000:]}"
        assert versions_by_name(pg_store) == {n: [1] for n in names}

        # -- renew: three `certman renew` processes over everything ------------
        assert make_all_due(pg_store, ari) == N
        workers = _track(renew_workers(url, server, bundle, 3, cli=True))
        victim, survivors = workers[0], workers[1:]
        deadline = time.monotonic() + PHASE_TIMEOUT
        while len(pg_store.issued_serials()) < N + N // 4:
            assert time.monotonic() < deadline, "renewals did not progress"
            assert victim.poll() is None, f"worker ended early: {victim.communicate()}"
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)  # mid-run, orders in flight
        victim.communicate(timeout=60)
        assert victim.returncode == -signal.SIGKILL
        results = _wait(survivors)
        reports = []
        for rc, out, err in results:
            assert rc == 0, f"renew worker failed: {out[-3000:]}\n{err[-3000:]}"
            reports.append(json.loads(out))
    finally:
        summaries = [r.stop() for r in responders]

    # Every certificate issued exactly once and renewed exactly once.
    history = pg_store.issued_serials()
    assert versions_by_name(pg_store) == {n: [1, 2] for n in names}
    serials = [serial for _, _, serial in history]
    assert None not in serials and len(set(serials)) == 2 * N
    for name in names[:: max(1, N // 20)]:
        _live_is_whole(pg_store, name)
        assert pg_store.load_live(name).version == 2

    # The survivors renewed what the victim did not finish, and nothing twice.
    renewed = sum(r["counts"].get("renewed", 0) for r in reports)
    assert renewed <= N
    assert all(r["ok"] for r in reports)
    statuses = {c["status"] for r in reports for c in r["certificates"]}
    assert statuses <= {"renewed", "not-due", "skipped"}, statuses

    # Validations were answered by both responders, never by the ordering
    # worker (workers only publish tokens). Pebble fetches each token from 3
    # "perspectives", and each responder has half the names: issuance alone
    # is 1.5 N requests per responder, so more than 2 N means the renewals'
    # validations came to the responders too.
    for summary in summaries:
        assert summary["served"] > 2 * N, summaries


def test_database_going_away_mid_run(pg_server: LocalPostgres) -> None:
    _run_cluster(pg_server, functools.partial(_database_going_away, pg_server=pg_server))


def _database_going_away(
    pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore, *, pg_server: LocalPostgres
) -> None:
    url, server, bundle = pg_store.url, ari.directory_url, str(pebble.ca_bundle)
    count = 40
    names = [f"d{i:03d}.outage.test" for i in range(count)]
    route_names(pebble, names, ["127.0.0.1"])
    responder = start_responder(url, "127.0.0.1", pebble.http_port)
    try:
        register(url, server, bundle)
        [(rc, out, err)] = _wait(_track(issue_workers(url, server, bundle, [names])))
        assert rc == 0, err[-3000:]
        make_all_due(pg_store, ari)

        [worker] = _track(renew_workers(url, server, bundle, 1, cli=True, concurrency=4))
        deadline = time.monotonic() + PHASE_TIMEOUT
        while len(pg_store.issued_serials()) < count + 5:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        pg_server.stop()  # fast shutdown: every session is cut
        try:
            out, err = worker.communicate(timeout=PHASE_TIMEOUT)
        finally:
            pg_server.start()
        assert worker.returncode == 1
        assert "Traceback" not in err, err[-6000:]
        report = json.loads(out)
        failed = [c for c in report["certificates"] if c["status"] == "failed"]
        assert failed, report
        # Each failure is the outage: the store unreachable, or (the responder
        # could not read the token either) the CA's validation refused.
        codes = {c["error_code"] for c in failed}
        assert "store-unavailable" in codes, codes
        assert codes <= {"store-unavailable", "acme-unauthorized", "acme-validation"}, failed

        # Nothing half-written: every live certificate is whole, every name has
        # its first version and at most one more.
        after = versions_by_name(pg_store)
        assert set(after) == set(names)
        assert all(v in ([1], [1, 2]) for v in after.values()), after
        for name in names:
            _live_is_whole(pg_store, name)

        # The next run finishes the job.
        [again] = _track(renew_workers(url, server, bundle, 1, cli=True, concurrency=4))
        out, err = again.communicate(timeout=PHASE_TIMEOUT)
        assert again.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
        assert versions_by_name(pg_store) == {n: [1, 2] for n in names}
    finally:
        responder.stop()


def test_issue_and_renew_commands_with_tokens_in_the_store(pg_server: LocalPostgres) -> None:
    _run_cluster(pg_server, _commands_with_tokens_in_the_store)


def _commands_with_tokens_in_the_store(
    pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore
) -> None:
    url, server, bundle = pg_store.url, pebble.directory_url, str(pebble.ca_bundle)
    route_names(pebble, ["cli.cluster.test"], ["127.0.0.2"])
    responder = start_responder(url, "127.0.0.2", pebble.http_port)
    base = [sys.executable, "-m", "certman", "--store", url, "--server", server]
    base += ["--ca-bundle", bundle]
    try:
        issued = subprocess.run(
            [*base, "issue", "-d", "cli.cluster.test", "--http01-store", "--agree-tos"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert issued.returncode == 0, issued.stderr
        assert pg_store.load_meta("cli.cluster.test").solver == "http01-store"
        renewed = subprocess.run(
            [*base, "renew", "cli.cluster.test", "--force", "--json"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert renewed.returncode == 0, renewed.stderr
        assert json.loads(renewed.stdout)["counts"] == {"renewed": 1}
        plain = [sys.executable, "-m", "certman"]
        listed = subprocess.run(
            [*plain, "list", "--store", url, "--json"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert "cli.cluster.test" in listed.stdout
        metrics = subprocess.run(
            [*base, "metrics", "--json"], capture_output=True, text=True, env=env(), timeout=60
        )
        assert metrics.returncode == 0, metrics.stderr
        assert [m["name"] for m in json.loads(metrics.stdout)] == ["cli.cluster.test"]
    finally:
        summary = responder.stop()
    assert summary["served"] >= 2  # the issuance and the renewal, answered from the store
    assert pg_store.list_versions("cli.cluster.test") == [1, 2]
    assert pg_store.status().counts["tokens"] == 0  # withdrawn after each order


def test_store_solver_needs_a_store() -> None:
    with pytest.raises(ConfigError) as err:
        SolverSpec.http01_store().build()
    assert err.value.code == "invalid-solver"


HOLDER = """
import sys
from certman.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
with store.lock_certificate(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_dead_workers_lineage_is_finished_in_the_same_run(pg_server: LocalPostgres) -> None:
    """`renew --lock-wait`: a lineage held by a worker that then dies is renewed by this run."""
    _run_cluster(pg_server, _dead_workers_lineage)


def _dead_workers_lineage(pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore) -> None:
    url, server, bundle = pg_store.url, ari.directory_url, str(pebble.ca_bundle)
    names = ["held.wait.test", "free.wait.test"]
    route_names(pebble, names, ["127.0.0.2"])
    responder = start_responder(url, "127.0.0.2", pebble.http_port)
    try:
        register(url, server, bundle)
        [(rc, _, err)] = _wait(_track(issue_workers(url, server, bundle, [names])))
        assert rc == 0, err[-3000:]
        make_all_due(pg_store, ari)
        # Another worker holds the first lineage (mid-order, as far as we know).
        [holder] = _track(
            [
                subprocess.Popen(
                    [sys.executable, "-c", HOLDER, url, names[0]],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env(),
                )
            ]
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        [worker] = _track(renew_workers(url, server, bundle, 1, cli=True, concurrency=1))
        deadline = time.monotonic() + PHASE_TIMEOUT
        while pg_store.list_versions(names[1]) != [1, 2]:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        assert pg_store.list_versions(names[0]) == [1]
        holder.kill()  # SIGKILL: its session ends, the lock with it
        holder.communicate()
        out, err = worker.communicate(timeout=PHASE_TIMEOUT)
    finally:
        responder.stop()
    assert worker.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    statuses = {c["name"]: c["status"] for c in json.loads(out)["certificates"]}
    assert statuses == {names[0]: "renewed", names[1]: "renewed"}
    assert pg_store.list_versions(names[0]) == [1, 2]


def test_only_a_wedged_pebble_earns_a_second_run(pg_server: LocalPostgres) -> None:
    calls: list[int] = []

    def wedges_once(pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore) -> None:
        calls.append(1)
        if len(calls) == 1:
            pebble.pause()  # stops answering, as a deadlocked Pebble does
            raise AssertionError("renewals did not progress")

    _run_cluster(pg_server, wedges_once)
    assert len(calls) == 2

    def real_failure(pebble: LocalPebble, ari: AriServer, pg_store: PostgresStore) -> None:
        calls.append(1)
        raise AssertionError("certman bug")

    with pytest.raises(AssertionError, match="certman bug"):
        _run_cluster(pg_server, real_failure)
    assert len(calls) == 3  # a live Pebble: the failure is certman's, no second run
