"""Secrets at the library level: DEBUG logs of every logger during issue, renew
and account key rollover hold no key material, and the account key never
reaches a lineage's meta.

A platform embedding certman may ship its logs anywhere (with ``extra``
fields, arguments and tracebacks); so every record's message, its raw
arguments and any exception text are checked, not just what a formatter
would show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from certman.manager import CertificateManager, IssueRequest, SolverSpec
from certman.store import FileStore
from certman.testing import LocalPebble
from tests.conftest import running_pebble
from tests.secrecy.test_secrets_cli import assert_no_key_material, private_key_files

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble()


def test_debug_logs_and_meta_hold_no_key_material(
    pebble: LocalPebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    caplog.set_level(logging.DEBUG)
    with CertificateManager(
        FileStore(home),
        server=pebble.directory_url,
        ca_bundle=pebble.ca_bundle,
        default_solver=SolverSpec.standalone("127.0.0.1", pebble.http_port),
    ) as manager:
        manager.ensure_account(agree_tos=True)
        report = manager.issue_many(
            [IssueRequest(names=("lib.example",)), IssueRequest(names=("lib2.example",))]
        )
        assert report.ok, report
        assert manager.renew_all().ok
        manager.rollover_account()
    assert len(caplog.records) > 10, "DEBUG logging should have produced records"
    keys = [p.read_bytes() for p in private_key_files(home)]
    assert len(keys) >= 4  # account key, previous account key, two certificate keys
    for record in caplog.records:
        text = record.getMessage() + " " + repr(record.args) + " " + repr(record.__dict__)
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        assert_no_key_material(text, keys, f"log record {record.name}:{record.lineno}")
    for meta in home.rglob("meta.json"):
        assert_no_key_material(meta.read_text(), keys, str(meta))
