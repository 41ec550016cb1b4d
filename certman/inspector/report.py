"""Renderers: text, JSON lines, CSV and Prometheus text. They return strings.

The JSON lines object (one per source) is the stable machine format,
documented in docs/inspector.md::

    {"source", "status": "ok"|"error", "error", "error_code",
     "certificates": [{"index", "subject", "issuer", "serial", "sha256",
                       "not_before", "not_after", "days_left", "key",
                       "signature_hash", "sans"}],
     "findings": [{"rule", "severity", "message", "cert"}]}

:func:`render_result` is what a scan worker runs for the CLI: it filters,
renders one source in the chosen format and returns a small
:class:`Rendered` (text plus the counts the summary and exit status need).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from certman.inspector.model import CertificateInfo, Finding, Report, ScanResult, Severity
from certman.inspector.rules import RULES

FORMATS = ("table", "jsonl", "csv", "prometheus")


def iso(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.isoformat(timespec="seconds")[:19] + "Z"


@dataclass(frozen=True)
class Filter:
    """What to show: rule ids (None: all), a minimum severity, an expiry window.

    ``expiring_within`` (days) keeps only sources with a certificate that
    expires within that many days (or has expired); error results are
    always kept.
    """

    only: frozenset[str] | None = None
    min_severity: Severity = Severity.INFO
    expiring_within: int | None = None

    def findings(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings that pass the rule and severity filters."""
        return [
            f
            for f in findings
            if f.severity >= self.min_severity and (self.only is None or f.rule in self.only)
        ]

    def selects(self, result: ScanResult) -> bool:
        """Whether a source is shown at all."""
        if self.expiring_within is None or result.report is None:
            return True
        return any(c.days_left <= self.expiring_within for c in result.report.certificates)


def certificate_dict(info: CertificateInfo) -> dict[str, Any]:
    """One certificate as in the JSON lines schema."""
    return {
        "index": info.index,
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "sha256": info.sha256,
        "not_before": iso(info.not_before),
        "not_after": iso(info.not_after),
        "days_left": info.days_left,
        "key": str(info.key),
        "signature_hash": info.signature_hash,
        "sans": list(info.sans),
    }


def finding_dict(f: Finding) -> dict[str, Any]:
    """One finding as in the JSON lines schema."""
    return {"rule": f.rule, "severity": str(f.severity), "message": f.message, "cert": f.cert}


def result_dict(
    result: ScanResult, flt: Filter | None = None, *, chain: bool = False
) -> dict[str, Any]:
    """The JSON lines object of one source (``chain`` adds the link details)."""
    flt = flt or Filter()
    report = result.report
    out: dict[str, Any] = {
        "source": result.source,
        "status": result.status,
        "error": result.error,
        "error_code": result.error_code,
        "certificates": [],
        "findings": [],
    }
    if report is not None:
        out["certificates"] = [certificate_dict(c) for c in report.certificates]
        out["findings"] = [finding_dict(f) for f in flt.findings(report.findings)]
        if chain:
            out["chain"] = chain_dict(report)
    return out


def chain_dict(report: Report) -> dict[str, Any]:
    """The chain analysis as JSON: path, anchor and one entry per link."""
    ch = report.chain
    return {
        "leaf": ch.leaf,
        "path": list(ch.path),
        "trusted": ch.trusted,
        "complete": ch.complete,
        "anchor": ch.anchor,
        "links": [
            {"index": ln.index, "status": str(ln.status), "issuer": ln.issuer, "detail": ln.detail}
            for ln in ch.links
        ],
    }


_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# What _DUMPS does to one str (the C encoder, ensure_ascii=False): the lines
# below are built from pieces with it, the same bytes as _DUMPS of the dict
# (a test checks), at a fraction of the cost per source.
_STR: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)
_CERT_JSON: dict[tuple[str, int, int], str] = {}


def _opt(value: str | None) -> str:
    return "null" if value is None else _STR(value)


def _cert_text(info: CertificateInfo) -> str:
    sans = ",".join([_STR(n) for n in info.sans])
    return (
        f'{{"index":{info.index},"subject":{_STR(info.subject)},"issuer":{_STR(info.issuer)},'
        f'"serial":{_STR(info.serial)},"sha256":{_STR(info.sha256)},'
        f'"not_before":"{iso(info.not_before)}","not_after":"{iso(info.not_after)}",'
        f'"days_left":{info.days_left},"key":{_STR(str(info.key))},'
        f'"signature_hash":{_opt(info.signature_hash)},"sans":[{sans}]}}'
    )


def _cert_json(info: CertificateInfo) -> str:
    # Intermediates recur in every bundle of a fleet: their JSON is made once.
    if not info.index:
        return _cert_text(info)
    key = (info.sha256, info.index, info.days_left)
    text = _CERT_JSON.get(key)
    if text is None:
        text = _cert_text(info)
        if len(_CERT_JSON) > 512:
            _CERT_JSON.clear()
        _CERT_JSON[key] = text
    return text


def _finding_text(f: Finding) -> str:
    cert = "null" if f.cert is None else str(f.cert)
    return (
        f'{{"rule":{_STR(f.rule)},"severity":"{f.severity}",'
        f'"message":{_STR(f.message)},"cert":{cert}}}'
    )


def jsonl_line(result: ScanResult, flt: Filter | None = None) -> str:
    """One compact JSON line (no trailing newline); same object as :func:`result_dict`."""
    report = result.report
    if report is None:
        return _DUMPS(result_dict(result, flt))
    flt = flt or Filter()
    certs = ",".join([_cert_json(c) for c in report.certificates])
    findings = ",".join([_finding_text(f) for f in flt.findings(report.findings)])
    return (
        f'{{"source":{_STR(result.source)},"status":"ok","error":null,"error_code":null,'
        f'"certificates":[{certs}],"findings":[{findings}]}}'
    )


# --- text -------------------------------------------------------------------


def _finding_line(f: Finding) -> str:
    where = f"#{f.cert}" if f.cert is not None else "  "
    return f"    {str(f.severity).upper():<8} {f.rule:<20} {where:>3}  {f.message}"


def render_text(result: ScanResult | Report, flt: Filter | None = None) -> str:
    """A readable multi-line report of one source (``certman inspect``)."""
    flt = flt or Filter()
    if isinstance(result, ScanResult):
        if result.report is None:
            return f"== {result.source}\n  error: {result.error} [{result.error_code}]\n"
        report = result.report
    else:
        report = result
    n = len(report.certificates)
    lines = [
        f"== {report.source} ({report.format}, {n} certificate{'s' if n != 1 else ''}"
        + (f", {report.keys} key{'s' if report.keys != 1 else ''}" if report.keys else "")
        + (f", host {report.host}" if report.host else "")
        + ")"
    ]
    for info in report.certificates:
        link = report.chain.links[info.index]
        role = " (end entity)" if info.index == report.chain.leaf else ""
        lines += [
            f"  #{info.index} {info.subject}{role}",
            f"      issuer     {info.issuer}",
            f"      serial     {info.serial}",
            f"      sha256     {info.sha256}",
            f"      valid      {iso(info.not_before)} .. {iso(info.not_after)}"
            f" ({_days_text(info.days_left)})",
            f"      key        {info.key}    signature {info.signature_algorithm}",
        ]
        if info.sans:
            lines.append(f"      names      {', '.join(info.sans)}")
        lines.append(f"      link       {link.status}: {link.detail}")
    ch = report.chain
    path = " -> ".join(f"#{i}" for i in ch.path)
    end = (
        f"trusted ({ch.anchor})"
        if ch.trusted
        else ("complete, untrusted" if ch.complete else "incomplete")
    )
    lines.append(f"  chain: {path} -> {end}")
    shown = flt.findings(report.findings)
    if shown:
        lines.append(f"  findings ({len(shown)}):")
        lines += [_finding_line(f) for f in shown]
    else:
        lines.append("  findings: none")
    return "\n".join(lines) + "\n"


def _days_text(days: int) -> str:
    return "expired" if days < 0 else f"{days} days left"


def table_row(
    result: ScanResult, flt: Filter | None = None, *, show_all: bool = False
) -> str | None:
    """The table lines of one source, or None when there is nothing to show."""
    flt = flt or Filter()
    if result.report is None:
        return (
            f"{result.source}\n    ERROR    {result.error_code or 'error':<20}      {result.error}"
        )
    shown = flt.findings(result.report.findings)
    if not shown and not show_all:
        return None
    leaf = result.report.leaf
    head = (
        f"{result.source}  expires {leaf.not_after.date()} ({_days_text(leaf.days_left)})"
        f"  issuer {leaf.issuer}"
    )
    return "\n".join([head] + [_finding_line(f) for f in shown])


# --- CSV --------------------------------------------------------------------

CSV_HEADER = (
    "source",
    "status",
    "error",
    "cert",
    "subject",
    "issuer",
    "serial",
    "sha256",
    "not_before",
    "not_after",
    "days_left",
    "key",
    "signature_hash",
    "findings",
)


def csv_line(values: Iterable[Any]) -> str:
    """One CSV record (RFC 4180 quoting), without the line ending."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def csv_rows(result: ScanResult, flt: Filter | None = None) -> str:
    """One CSV record per certificate (an error: one record); findings as ``rule:severity``."""
    flt = flt or Filter()
    if result.report is None:
        row = [result.source, "error", result.error, "", "", "", "", "", "", "", "", "", "", ""]
        return csv_line(row)
    shown = flt.findings(result.report.findings)
    lines = []
    for info in result.report.certificates:
        mine = [f for f in shown if f.cert == info.index or (f.cert is None and info.index == 0)]
        lines.append(
            csv_line(
                [
                    result.source,
                    "ok",
                    "",
                    info.index,
                    info.subject,
                    info.issuer,
                    info.serial,
                    info.sha256,
                    iso(info.not_before),
                    iso(info.not_after),
                    info.days_left,
                    str(info.key),
                    info.signature_hash or "",
                    ";".join(f"{f.rule}:{f.severity}" for f in mine),
                ]
            )
        )
    return "\n".join(lines)


# --- Prometheus text format -------------------------------------------------

PROM_CERT_HEADER = (
    "# HELP certman_certificate_expiry_timestamp_seconds notAfter of each scanned certificate.\n"
    "# TYPE certman_certificate_expiry_timestamp_seconds gauge"
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_rows(result: ScanResult) -> str:
    """The per-certificate expiry samples of one source (after PROM_CERT_HEADER)."""
    if result.report is None:
        return ""
    src = _label(result.source)
    return "\n".join(
        f'certman_certificate_expiry_timestamp_seconds{{source="{src}",index="{c.index}",'
        f'subject="{_label(c.subject)}",sha256="{c.sha256}"}} {int(c.not_after.timestamp())}'
        for c in result.report.certificates
    )


# --- the summary and the CLI's per-result work --------------------------------


class Rendered(NamedTuple):
    """What the scan CLI needs back from a worker for one source.

    A NamedTuple rather than a dataclass: one crosses the process boundary
    per source, and tuples pickle several times faster.
    """

    text: str | None
    status: str
    findings: tuple[tuple[str, int], ...] = ()
    selected: bool = True


def render_result(result: ScanResult, fmt: str, flt: Filter, show_all: bool = False) -> Rendered:
    """Filter and render one result in ``fmt`` (runs in the scan worker)."""
    selected = flt.selects(result)
    shown = flt.findings(result.report.findings) if result.report is not None else []
    text: str | None = None
    if selected:
        if fmt == "jsonl":
            text = jsonl_line(result, flt)
        elif fmt == "csv":
            text = csv_rows(result, flt)
        elif fmt == "prometheus":
            text = prometheus_rows(result) or None
        else:
            text = table_row(result, flt, show_all=show_all)
    return Rendered(text, result.status, tuple((f.rule, int(f.severity)) for f in shown), selected)


@dataclass
class Summary:
    """Counts over a whole scan (mutable: the CLI adds to it as results stream in)."""

    sources: int = 0
    errors: int = 0
    shown: int = 0
    by_severity: Counter[int] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    worst: Severity | None = None

    def add(self, item: Rendered) -> None:
        """Count one rendered result (findings only for sources that were shown)."""
        self.sources += 1
        if item.status == "error":
            self.errors += 1
        if not item.selected:
            return
        self.shown += 1
        for rule_id, sev in item.findings:
            self.by_severity[sev] += 1
            self.by_rule[rule_id] += 1
            if self.worst is None or sev > self.worst:
                self.worst = Severity(sev)

    def failed(self, fail_on: Severity | None) -> bool:
        """Exit status 1? (errors, or a finding at or above ``fail_on``)."""
        if self.errors:
            return True
        return fail_on is not None and self.worst is not None and self.worst >= fail_on

    def text(self) -> str:
        """The summary printed after table output."""
        ok = self.sources - self.errors
        lines = [f"scanned {self.sources} source(s): {ok} ok, {self.errors} error(s)"]
        if self.by_severity:
            sev = ", ".join(
                f"{Severity(s)} {n}" for s, n in sorted(self.by_severity.items(), reverse=True)
            )
            rules = ", ".join(f"{r} {n}" for r, n in self.by_rule.most_common())
            lines.append(f"findings: {sev}")
            lines.append(f"by rule: {rules}")
        else:
            lines.append("findings: none")
        return "\n".join(lines)

    def prometheus(self) -> str:
        """Summary metric families, printed after the per-certificate samples."""
        out = [
            "# HELP certman_scan_sources Sources scanned, by status.",
            "# TYPE certman_scan_sources gauge",
            f'certman_scan_sources{{status="ok"}} {self.sources - self.errors}',
            f'certman_scan_sources{{status="error"}} {self.errors}',
            "# HELP certman_scan_findings Findings, by rule and severity.",
            "# TYPE certman_scan_findings gauge",
        ]
        rules: Counter[tuple[str, int]] = Counter()
        # by_rule loses severities; rules have one severity each.
        for rule_id, n in self.by_rule.items():
            sev = int(RULES[rule_id].severity) if rule_id in RULES else 0
            rules[(rule_id, sev)] += n
        for (rule_id, sev), n in sorted(rules.items()):
            out.append(f'certman_scan_findings{{rule="{rule_id}",severity="{Severity(sev)}"}} {n}')
        return "\n".join(out)


def only_rules(text: str | None) -> frozenset[str] | None:
    """Parse ``--only a,b`` (None: all rules); InspectOptions rejects unknown ids."""
    if not text:
        return None
    return frozenset(r.strip() for r in text.split(",") if r.strip())
