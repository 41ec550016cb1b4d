"""Prometheus metrics for managed certificates, and node_exporter textfiles.

:func:`render` turns a list of :class:`CertificateMetrics` into the
Prometheus text exposition format (0.0.4): ``# HELP`` and ``# TYPE`` lines,
then one sample per certificate, label values escaped. :func:`write_textfile`
writes it for node_exporter's textfile collector, atomically, so the
collector never reads half a file.

Metrics (all gauges, one series per certificate, label ``name``):

- ``certman_certificate_not_after_timestamp_seconds``: expiry;
- ``certman_certificate_renewal_due``: 1 when due now, else 0;
- ``certman_certificate_next_renewal_timestamp_seconds``: when due (label
  ``source``: ``ari``, ``lifetime``, ``backoff``, ...);
- ``certman_certificate_last_renewal_success_timestamp_seconds``: the last
  successful issuance or renewal (absent when unknown);
- ``certman_certificate_renewal_consecutive_failures``;
- ``certman_certificate_info``: always 1, labels ``domains``, ``issuer``,
  ``key_type`` for joins in queries;

and ``certman_metrics_generated_timestamp_seconds`` (no labels), so an
alert can catch a textfile that stopped being refreshed.

Example alert: ``certman_certificate_not_after_timestamp_seconds - time() < 7 * 86400``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from certman import _atomic
from certman.errors import CertmanError
from certman.renewal import HasValidity, RenewalDecision, Validity, decide, state_from_meta
from certman.store.base import Store

logger = logging.getLogger(__name__)

PREFIX = "certman_"


@dataclass(frozen=True)
class CertificateMetrics:
    """The figures exported for one certificate. Times are timezone-aware.

    None means unknown: the series is left out rather than exported as 0,
    so ``absent()`` and comparisons in alerts behave.
    """

    name: str
    not_after: datetime | None = None
    renewal_due: bool = False
    next_renewal: datetime | None = None
    renewal_source: str | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    domains: Sequence[str] = ()
    issuer: str | None = None
    key_type: str | None = None


def certificate_metrics(
    name: str,
    cert: x509.Certificate | HasValidity,
    decision: RenewalDecision,
    *,
    domains: Sequence[str] = (),
    issuer: str | None = None,
    key_type: str | None = None,
) -> CertificateMetrics:
    """The metrics of one certificate from its validity and today's renewal decision.

    Failures and the last success come from ``decision.state``.
    """
    state = decision.state
    return CertificateMetrics(
        name=name,
        not_after=Validity.of(cert).not_after,
        renewal_due=decision.due,
        next_renewal=decision.at,
        renewal_source=decision.source,
        last_success=state.last_success_at,
        consecutive_failures=state.consecutive_failures,
        domains=tuple(domains),
        issuer=issuer,
        key_type=key_type,
    )


def collect(store: Store, *, now: datetime) -> list[CertificateMetrics]:
    """The metrics of every certificate in ``store``, without touching the network.

    Each certificate's renewal decision uses what its meta remembers (the
    ARI window and moment, failures, backoff), as ``certman renew`` would
    before fetching fresh ARI. A certificate whose files cannot be read is
    left out and logged; its absence is what alerts should catch (e.g.
    ``absent(certman_certificate_not_after_timestamp_seconds{name="..."})``).
    """
    out: list[CertificateMetrics] = []
    for name in store.list_certificates():
        try:
            meta = store.find_meta(name)
            cert = x509.load_pem_x509_certificate(store.load_live(name).files.cert_pem)
        except (CertmanError, ValueError) as exc:
            logger.warning("certificate %s left out of the metrics: %s", name, exc)
            continue
        if meta is None:
            decision = decide(cert, now=now)
            out.append(certificate_metrics(name, cert, decision))
            continue
        decision = decide(cert, now=now, state=state_from_meta(meta))
        issuer = cert.issuer.rfc4514_string()
        out.append(
            certificate_metrics(
                name, cert, decision, domains=meta.names, issuer=issuer, key_type=meta.key_type
            )
        )
    return out


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and newline (exposition format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape HELP text: backslash and newline."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _timestamp(value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"metric times must be timezone-aware, got {value!r}")
    return value.timestamp()


class _Family:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = PREFIX + name
        self.help = help_text
        self.samples: list[str] = []

    def add(self, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.samples.append(f"{self.name}{_labels(labels)} {_number(value)}")

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {escape_help(self.help)}",
            f"# TYPE {self.name} gauge",
            *self.samples,
        ]


def render(certificates: Iterable[CertificateMetrics], *, now: datetime) -> str:
    """The Prometheus text exposition of ``certificates`` (sorted by name).

    ``now`` becomes ``certman_metrics_generated_timestamp_seconds``. Families
    with no samples still get their HELP/TYPE lines, so the output's shape
    does not depend on the data.
    """
    not_after = _Family(
        "certificate_not_after_timestamp_seconds",
        "Expiry (notAfter) of the live certificate, in Unix time.",
    )
    due = _Family(
        "certificate_renewal_due",
        "1 when the certificate is due for renewal now, else 0.",
    )
    next_renewal = _Family(
        "certificate_next_renewal_timestamp_seconds",
        "When the certificate is (or was) due for renewal, in Unix time; "
        "label source says why (ari, lifetime, expired, backoff, retry-after).",
    )
    last_success = _Family(
        "certificate_last_renewal_success_timestamp_seconds",
        "Last successful issuance or renewal, in Unix time.",
    )
    failures = _Family(
        "certificate_renewal_consecutive_failures",
        "Failed renewal attempts since the last success.",
    )
    info = _Family(
        "certificate_info",
        "Always 1; labels describe the certificate.",
    )
    for cert in sorted(certificates, key=lambda c: c.name):
        name = [("name", cert.name)]
        if cert.not_after is not None:
            not_after.add(name, _timestamp(cert.not_after))
        due.add(name, 1 if cert.renewal_due else 0)
        if cert.next_renewal is not None:
            next_renewal.add(
                [*name, ("source", cert.renewal_source or "unknown")],
                _timestamp(cert.next_renewal),
            )
        if cert.last_success is not None:
            last_success.add(name, _timestamp(cert.last_success))
        failures.add(name, cert.consecutive_failures)
        info.add(
            [
                *name,
                ("domains", ",".join(cert.domains)),
                ("issuer", cert.issuer or ""),
                ("key_type", cert.key_type or ""),
            ],
            1,
        )
    generated = _Family(
        "metrics_generated_timestamp_seconds",
        "When certman wrote these metrics, in Unix time.",
    )
    generated.add([], _timestamp(now))
    lines: list[str] = []
    for family in (not_after, due, next_renewal, last_success, failures, info, generated):
        lines.extend(family.render())
    return "\n".join(lines) + "\n"


def write_textfile(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically, for node_exporter's textfile collector.

    The text goes to a hidden temporary file in the same directory (whose
    name does not end in ``.prom``, so the collector ignores it), is flushed
    to disk, made world-readable (0644: metrics are not secret, and the
    collector usually runs as another user) and renamed over ``path``.
    Readers see the old file or the new one, never a mix. node_exporter
    only reads files named ``*.prom``.

    Raises ``CertmanError`` (code ``metrics-write-failed``) on any OS error;
    no temporary file is left behind.
    """
    target = Path(path)
    try:
        # The temp name (".<name>.<random>") never ends in ".prom".
        _atomic.replace_file(target, text.encode("utf-8"), 0o644, tmp_prefix=f".{target.name}.")
    except OSError as exc:
        raise CertmanError(
            f"could not write metrics to {target}: {exc.strerror or exc}",
            code="metrics-write-failed",
            path=str(target),
        ) from exc
    return target


__all__ = [
    "CertificateMetrics",
    "certificate_metrics",
    "collect",
    "escape_help",
    "escape_label_value",
    "render",
    "write_textfile",
]
