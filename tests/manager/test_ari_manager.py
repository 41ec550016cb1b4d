"""ARI (RFC 9773) in the manager, against real Pebble behind a directory proxy.

Pebble 2.4.0 has no renewalInfo; :class:`certman.testing.AriServer` serves
Pebble's directory with ``renewalInfo`` added and answers the renewalInfo
requests, while every ACME request still goes to the real Pebble.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from certman.client import AcmeClient
from certman.client.ari import cert_id
from certman.errors import AcmeError
from certman.manager import CertificateManager, SolverSpec, list_status
from certman.store import FileStore
from certman.testing import AriServer, LocalPebble

pytestmark = pytest.mark.pebble


@pytest.fixture()
def proxy(pebble: LocalPebble) -> Iterator[AriServer]:
    with AriServer(
        upstream_directory=pebble.directory_url, upstream_ca_bundle=str(pebble.ca_bundle)
    ) as server:
        yield server


@pytest.fixture()
def ari_manager(
    pebble: LocalPebble, proxy: AriServer, store: FileStore
) -> Iterator[CertificateManager]:
    with CertificateManager(
        store,
        server=proxy.directory_url,
        ca_bundle=pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", pebble.http_port),
    ) as m:
        m.register_account(agree_tos=True)
        yield m


def _leaf(store: FileStore, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(store.load_live(name).files.cert_pem)


def _fetches(proxy: AriServer) -> int:
    return sum(1 for r in proxy.requests if r.path.startswith("/renewal-info/"))


def test_future_window_is_stored_and_retry_after_respected(
    ari_manager: CertificateManager, proxy: AriServer, store: FileStore
) -> None:
    ari_manager.issue(["ari-later.example"])
    cert = _leaf(store, "ari-later.example")
    now = datetime.now(UTC)
    start, end = now + timedelta(days=10), now + timedelta(days=11)
    proxy.set_window(cert, start, end, retry_after="3600")

    report = ari_manager.renew_due()
    (outcome,) = report.outcomes
    assert outcome.status == "not-due" and outcome.renewal_source == "ari"
    meta = store.load_meta("ari-later.example")
    assert meta.ari_window_start is not None and meta.ari_window_end is not None
    assert abs(meta.ari_window_start - start) < timedelta(seconds=1)
    assert meta.ari_chosen_time is not None
    assert meta.ari_window_start <= meta.ari_chosen_time < meta.ari_window_end
    assert outcome.next_renewal == meta.ari_chosen_time
    assert meta.ari_retry_after is not None
    assert timedelta(minutes=59) < meta.ari_retry_after - now < timedelta(minutes=61)
    assert _fetches(proxy) == 1

    # Within Retry-After: no new fetch, the same moment is kept.
    again = ari_manager.renew_due()
    assert again.outcomes[0].next_renewal == meta.ari_chosen_time
    assert _fetches(proxy) == 1
    (row,) = list_status(store, now=datetime.now(UTC))
    assert row.renewal_source == "ari" and row.next_renewal == meta.ari_chosen_time


def test_window_that_has_passed_renews_with_replaces(
    ari_manager: CertificateManager, proxy: AriServer, store: FileStore
) -> None:
    ari_manager.issue(["ari-now.example"])
    old = _leaf(store, "ari-now.example")
    now = datetime.now(UTC)
    proxy.set_window(old, now - timedelta(hours=2), now - timedelta(hours=1))
    report = ari_manager.renew_due()
    (outcome,) = report.outcomes
    assert outcome.status == "renewed", outcome.reason
    assert outcome.replaced == cert_id(old)
    new = _leaf(store, "ari-now.example")
    assert new.serial_number != old.serial_number
    meta = store.load_meta("ari-now.example")
    # A new certificate forgets the old one's window.
    assert meta.ari_window_start is None and meta.ari_chosen_time is None


def test_no_renewal_info_falls_back_to_lifetime(
    ari_manager: CertificateManager, proxy: AriServer, store: FileStore
) -> None:
    ari_manager.issue(["ari-404.example"])
    report = ari_manager.renew_due()
    assert report.outcomes[0].status == "not-due"
    assert report.outcomes[0].renewal_source == "lifetime"
    assert _fetches(proxy) == 1


def test_already_replaced_is_retried_without_replaces(
    ari_manager: CertificateManager,
    proxy: AriServer,
    store: FileStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pebble 2.4.0 ignores ``replaces``, so the CA's alreadyReplaced answer is
    # injected at the client seam; the retried order goes to the real Pebble.
    ari_manager.issue(["ari-dup.example"])
    old = _leaf(store, "ari-dup.example")
    now = datetime.now(UTC)
    proxy.set_window(old, now - timedelta(hours=2), now - timedelta(hours=1))
    calls: list[str | None] = []
    real_issue = AcmeClient.issue

    def issue(self: AcmeClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("replaces"))
        if kwargs.get("replaces"):
            raise AcmeError(
                "already replaced (alreadyReplaced)",
                code="acme-already-replaced",
                problem_type="urn:ietf:params:acme:error:alreadyReplaced",
            )
        return real_issue(self, *args, **kwargs)

    monkeypatch.setattr(AcmeClient, "issue", issue)
    report = ari_manager.renew_due()
    assert [o.status for o in report.outcomes] == ["renewed"]
    assert calls == [cert_id(old), None]
    assert _leaf(store, "ari-dup.example").serial_number != old.serial_number
    assert report.outcomes[0].replaced is None  # the order that went through had none
