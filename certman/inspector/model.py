"""The inspector's values: severities, findings, certificate facts, reports.

All frozen, all picklable (they cross process boundaries in a scan), none
holding key material.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from certman.errors import ConfigError
from certman.inspector.chain import ChainAnalysis


class Severity(enum.IntEnum):
    """How bad a finding is; ordered, so ``finding.severity >= Severity.HIGH`` works."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``"high"`` -> Severity.HIGH; ConfigError for an unknown level."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            levels = ", ".join(str(s) for s in cls)
            raise ConfigError(
                f"unknown severity {text!r} (one of {levels})", code="bad-severity"
            ) from None


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, how bad, what, and which certificate (bundle index).

    ``cert`` is None for problems of the bundle as a whole (e.g. a block
    that could not be parsed).
    """

    rule: str
    severity: Severity
    message: str
    cert: int | None = None


@dataclass(frozen=True)
class KeyInfo:
    """A public key's type (``RSA``, ``EC``, ``Ed25519``, ``Ed448``, ``DSA``), size, curve."""

    type: str
    size: int
    curve: str | None = None

    def __str__(self) -> str:
        if self.type == "EC":
            return f"EC-{self.curve}"
        if self.type in {"RSA", "DSA"}:
            return f"{self.type}-{self.size}"
        return self.type


@dataclass(frozen=True)
class CertificateInfo:
    """What a reader wants to know about one certificate of a bundle.

    ``index`` is its position as received; ``days_left`` is whole days from
    the inspection's ``now`` to notAfter (negative once expired).
    """

    index: int
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    key: KeyInfo
    signature_algorithm: str
    signature_hash: str | None
    sans: tuple[str, ...]
    is_ca: bool
    self_signed: bool


@dataclass(frozen=True)
class Report:
    """The inspection of one bundle: certificates, chain, findings.

    ``findings`` are sorted worst first. ``chain`` keeps the status of each
    link as received and the path that was built.
    """

    source: str
    format: str
    certificates: tuple[CertificateInfo, ...]
    chain: ChainAnalysis
    findings: tuple[Finding, ...]
    host: str | None = None
    keys: int = 0

    @property
    def leaf(self) -> CertificateInfo:
        """The end entity (the first certificate of the built path)."""
        return self.certificates[self.chain.leaf]

    @property
    def worst(self) -> Severity | None:
        """The highest severity among the findings, None when there are none."""
        return max((f.severity for f in self.findings), default=None)


@dataclass(frozen=True)
class ScanResult:
    """One source's outcome in a scan: a report, or an error that stopped reading it.

    ``error_code`` is the stable code of the :class:`~certman.errors.InspectorError`.
    """

    source: str
    report: Report | None = None
    error: str | None = None
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        """True when the source was read and inspected."""
        return self.report is not None

    @property
    def status(self) -> str:
        """``"ok"`` or ``"error"`` (as in the JSON lines output)."""
        return "ok" if self.report is not None else "error"
