"""CertificateManager against a real Pebble: issuing, renewing, failures, hooks, locks."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certman.client import AcmeClient
from certman.errors import AcmeError, CertmanError, StoreError
from certman.keys import load_private_key
from certman.manager import (
    CertificateManager,
    IssueRequest,
    Outcome,
    RateLimits,
    SolverSpec,
    lineage_name,
    list_status,
)
from certman.store import FileStore
from certman.testing import LocalPebble
from tests.manager.conftest import BLOCKED

pytestmark = pytest.mark.pebble


def _leaf(store: FileStore, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(store.load_live(name).files.cert_pem)


def _later(years: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=365 * years)


def test_issue_stores_a_complete_lineage(manager: CertificateManager, store: FileStore) -> None:
    outcome = manager.issue(
        ["one.example", "www.one.example"], deploy_hook="true", post_hook="true"
    )
    assert outcome.status == "issued" and outcome.version == 1
    live = store.load_live("one.example")
    leaf = x509.load_pem_x509_certificate(live.files.cert_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["one.example", "www.one.example"]
    # The key on disk is the certificate's key, and fullchain = leaf + chain.
    key = load_private_key(live.files.privkey_pem)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert live.files.fullchain_pem == live.files.cert_pem + live.files.chain_pem
    meta = store.load_meta("one.example")
    assert meta.names == ("one.example", "www.one.example")
    assert meta.solver == "standalone" and meta.solver_options["port"] > 0
    assert meta.deploy_hooks == ("true",) and meta.post_hooks == ("true",)
    assert meta.last_success_at is not None and meta.not_after == leaf.not_valid_after_utc
    assert meta.serial == format(leaf.serial_number, "x")
    assert (Path(store.certificate_location("one.example")) / "privkey.pem").stat().st_mode & (
        0o077
    ) == 0


def test_issue_many_in_parallel_reports_progress_and_isolates_failures(
    manager: CertificateManager, store: FileStore
) -> None:
    seen: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def progress(outcome: Outcome, done: int, total: int) -> None:
        with lock:
            seen.append((outcome.name, done, total))

    requests = [IssueRequest(names=(f"many{i}.example",)) for i in range(12)]
    requests.insert(5, IssueRequest(names=(BLOCKED,)))
    report = manager.issue_many(requests, concurrency=4, progress=progress)
    assert report.counts() == {"issued": 12, "failed": 1}
    (failed,) = report.failed
    assert failed.name == BLOCKED and failed.error_code == "acme-rejected-identifier"
    assert BLOCKED not in store.list_certificates()
    assert store.find_meta(BLOCKED) is None
    assert sorted(d for _, d, _ in seen) == list(range(1, 14))
    assert {t for _, _, t in seen} == {13}
    assert len(store.list_certificates()) == 12


def test_issue_refused_name_raises_and_stores_nothing(
    manager: CertificateManager, store: FileStore
) -> None:
    with pytest.raises(AcmeError) as info:
        manager.issue([BLOCKED, "fine.example"])
    assert info.value.code == "acme-rejected-identifier"
    assert info.value.identifier == BLOCKED
    assert store.list_certificates() == []


def test_renew_due_renews_only_what_is_due(
    manager: CertificateManager, store: FileStore, pebble: LocalPebble
) -> None:
    manager.issue(["due.example"])
    report = manager.renew_due()
    assert [o.status for o in report.outcomes] == ["not-due"]
    assert report.outcomes[0].renewal_source == "lifetime"
    assert store.list_versions("due.example") == [1]

    # Four years on, a third of the five-year lifetime is left: due.
    manager.clock = lambda: _later(4)
    report = manager.renew_due()
    assert [o.status for o in report.outcomes] == ["renewed"]
    assert store.list_versions("due.example") == [1, 2]
    assert store.load_live("due.example").version == 2
    meta = store.load_meta("due.example")
    assert meta.consecutive_failures == 0 and meta.last_error is None


def test_forced_renewal_and_named_targets(manager: CertificateManager, store: FileStore) -> None:
    manager.issue_many([IssueRequest(names=(f"f{i}.example",)) for i in range(3)])
    report = manager.renew_due(["f1.example"], force=True)
    assert [(o.name, o.status) for o in report.outcomes] == [("f1.example", "renewed")]
    assert store.list_versions("f0.example") == [1]
    assert store.list_versions("f1.example") == [1, 2]
    report = manager.renew_all()
    assert report.counts() == {"renewed": 3}


def test_failure_is_recorded_backs_off_and_does_not_stop_others(
    manager: CertificateManager, store: FileStore, tmp_path: Path
) -> None:
    manager.issue_many([IssueRequest(names=(f"iso{i}.example",)) for i in range(3)])
    old = store.load_live("iso1.example").files
    # iso1 now also asks for a name the CA refuses: its renewal must fail.
    # (Not a validation failure: Pebble may reuse a valid authorization even
    # with PEBBLE_AUTHZREUSE=0, which would make such a test flaky.)
    meta = store.load_meta("iso1.example")
    store.save_meta(dataclasses.replace(meta, names=("iso1.example", BLOCKED)))
    manager.clock = lambda: _later(4)
    report = manager.renew_due()
    assert report.counts() == {"renewed": 2, "failed": 1}
    (failed,) = report.failed
    assert failed.name == "iso1.example" and failed.error_code == "acme-rejected-identifier"
    assert failed.next_renewal is not None
    assert store.load_live("iso1.example").files == old  # still served
    meta = store.load_meta("iso1.example")
    assert meta.consecutive_failures == 1
    assert meta.last_error and meta.last_error_code == failed.error_code
    assert meta.next_retry_at is not None and meta.next_retry_at > _later(4)

    again = manager.renew_due(["iso1.example"])
    assert again.outcomes[0].status == "not-due"
    assert again.outcomes[0].renewal_source == "backoff"
    rows = {s.name: s for s in list_status(store, now=_later(4))}
    assert rows["iso1.example"].renewal_source == "backoff"
    assert rows["iso1.example"].last_error == meta.last_error


def test_dry_run_orders_but_stores_nothing(
    manager: CertificateManager, store: FileStore, tmp_path: Path
) -> None:
    marker = tmp_path / "hook-ran"
    manager.issue(["dry.example"], deploy_hook=f"touch {marker}")
    marker.unlink()
    before_meta = store.load_meta("dry.example").to_dict()
    before_files = store.load_live("dry.example").files
    report = manager.renew_due(force=True, dry_run=True, pre_hook=f"touch {marker}")
    assert [o.status for o in report.outcomes] == ["dry-run"]
    assert report.outcomes[0].serial and report.outcomes[0].serial != before_meta["serial"]
    assert store.list_versions("dry.example") == [1]
    assert store.load_live("dry.example").files == before_files
    assert store.load_meta("dry.example").to_dict() == before_meta
    assert not marker.exists() and report.hooks == ()


def test_hooks_run_once_with_env_and_a_failing_hook_does_not_stop_others(
    manager: CertificateManager, store: FileStore, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    manager.issue(
        ["h1.example", "www.h1.example"],
        deploy_hook=f'echo "deploy $CERTMAN_NAME|$CERTMAN_DOMAINS|$CERTMAN_FULLCHAIN" >> {log}',
    )
    manager.issue(["h2.example"], deploy_hook="exit 3")
    manager.issue(["h3.example"], post_hook=f"echo stored-post >> {log}")
    log.unlink()
    report = manager.renew_due(
        force=True,
        pre_hook=f"echo pre >> {log}",
        deploy_hook=f"echo run-deploy $CERTMAN_NAME >> {log}",
        post_hook=f"echo post >> {log}",
    )
    assert report.counts() == {"renewed": 3}
    lines = log.read_text().splitlines()
    assert lines[0] == "pre" and lines.count("pre") == 1
    assert lines[-2:] == ["post", "stored-post"] or lines[-2:] == ["stored-post", "post"]
    live = store.certificate_location("h1.example")
    assert f"deploy h1.example|h1.example www.h1.example|{live}/fullchain.pem" in lines
    assert sorted(x for x in lines if x.startswith("run-deploy")) == [
        "run-deploy h1.example",
        "run-deploy h2.example",
        "run-deploy h3.example",
    ]
    (bad,) = report.hook_failures
    assert bad.certificate == "h2.example" and bad.returncode == 3
    assert report.ok


def test_no_hooks_when_nothing_renewed(manager: CertificateManager, tmp_path: Path) -> None:
    manager.issue(["quiet.example"])
    marker = tmp_path / "m"
    report = manager.renew_due(pre_hook=f"touch {marker}", post_hook=f"touch {marker}")
    assert report.counts() == {"not-due": 1} and not marker.exists()


def test_a_locked_lineage_is_left_alone(manager: CertificateManager, store: FileStore) -> None:
    manager.issue(["locked.example"])
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock_certificate("locked.example"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        held.wait(5)
        report = manager.renew_due(force=True)
    finally:
        release.set()
        thread.join()
    assert [o.status for o in report.outcomes] == ["locked"]
    assert store.list_versions("locked.example") == [1]


def test_crash_between_archive_and_live_switch_keeps_old_cert(
    manager: CertificateManager, store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager.issue(["seam.example"])
    old = store.load_live("seam.example").files

    def boom(self: FileStore, name: str, version: int) -> None:
        raise StoreError("injected fault before the live switch", code="store-io")

    with monkeypatch.context() as patch:
        patch.setattr(FileStore, "_switch_live", boom)
        report = manager.renew_due(force=True)
    assert [o.status for o in report.outcomes] == ["failed"]
    assert report.outcomes[0].error_code == "store-io"
    assert store.load_live("seam.example").files == old
    assert store.list_versions("seam.example") == [1, 2]  # written, never live
    assert store.load_meta("seam.example").consecutive_failures == 1

    report = manager.renew_due(force=True)
    assert [o.status for o in report.outcomes] == ["renewed"]
    assert store.load_live("seam.example").version == 3
    assert store.load_live("seam.example").files != old
    assert store.load_meta("seam.example").consecutive_failures == 0


def test_local_rate_limit_defers_instead_of_failing(pebble: LocalPebble, store: FileStore) -> None:
    with CertificateManager(
        store,
        server=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", pebble.http_port),
        limits=RateLimits(new_orders=(3, 3600.0), max_wait=0.0),
        concurrency=2,
    ) as manager:
        manager.register_account(agree_tos=True)
        report = manager.issue_many([IssueRequest(names=(f"rl{i}.example",)) for i in range(2)])
        assert report.counts() == {"issued": 2}
        report = manager.renew_due(force=True)
        assert sorted(o.status for o in report.outcomes) == ["deferred", "renewed"]
        assert report.ok
        deferred = report.by_status("deferred")[0]
        assert "rate limit" in deferred.reason
        assert store.list_versions(deferred.name) == [1]


def test_account_rollover_and_deactivation(
    manager: CertificateManager, store: FileStore, pebble: LocalPebble
) -> None:
    record, old_key = manager.account()
    status = manager.rollover_account()
    new_key = load_private_key(store.load_account_key(manager.directory_url, record.account_id))
    assert status.key_thumbprint and status.remote is not None
    assert new_key.private_numbers() != old_key.private_numbers()  # type: ignore[union-attr]
    with (
        AcmeClient(
            manager.directory, old_key, account_url=record.uri, ca_bundle=pebble.ca_bundle
        ) as stale,
        pytest.raises(AcmeError),
    ):
        stale.account()
    # The new key works for orders.
    assert manager.issue(["after-rollover.example"]).status == "issued"

    manager.deactivate_account()
    assert store.find_account(manager.directory_url) is None
    assert store.load_account(manager.directory_url, record.account_id).status == "deactivated"
    with (
        AcmeClient(
            manager.directory, new_key, account_url=record.uri, ca_bundle=pebble.ca_bundle
        ) as gone,
        pytest.raises(AcmeError),
    ):
        gone.account()
    with pytest.raises(CertmanError) as info:
        manager.issue(["no-account.example"])
    assert info.value.code == "no-account"


def test_revoke_marks_the_certificate_revoked_at_the_ca(
    manager: CertificateManager, store: FileStore, pebble: LocalPebble
) -> None:
    manager.issue(["revoke.example"])
    serial = _leaf(store, "revoke.example").serial_number
    assert not pebble.is_revoked(serial)
    outcome = manager.revoke("revoke.example", reason="superseded")
    assert outcome.status == "revoked"
    assert pebble.is_revoked(serial)
    assert store.load_meta("revoke.example").extra["revoked"]["reason"] == "superseded"


def test_corrupt_account_key_is_a_store_error(
    manager: CertificateManager, store: FileStore, pebble: LocalPebble
) -> None:
    record, _ = manager.account()
    key_path = store.root / "accounts"
    (path,) = key_path.glob(f"*/{record.account_id}/key.pem")
    path.write_bytes(b"not a key")
    fresh = CertificateManager(store, server=pebble.directory_url, ca_bundle=pebble.ca_bundle)
    with pytest.raises(StoreError) as info:
        fresh.issue(["x.example"], solver=SolverSpec.standalone("127.0.0.1", pebble.http_port))
    assert info.value.code == "store-corrupt"
    assert "not a key" not in str(info.value)


def test_lineage_names() -> None:
    assert lineage_name(["*.Example.org", "example.org"]) == "example.org"
    assert lineage_name(["2001:db8::1"]) == "2001-db8--1"
    assert lineage_name(["192.0.2.1"]) == "192.0.2.1"


def test_issue_reports_every_hook(manager: CertificateManager, tmp_path: Path) -> None:
    outcome = manager.issue(
        ["hooked.example"], pre_hook="exit 2", deploy_hook="true", post_hook="true"
    )
    assert outcome.status == "issued"
    assert [(h.kind, h.ok) for h in outcome.hooks] == [
        ("pre", False),
        ("deploy", True),
        ("post", True),
    ]
