"""Data: CA distrust events, and how to tell whether a chain is affected.

Each :class:`DistrustEvent` records what browser vendors did about a CA: for
each vendor, one or more :class:`VendorAction` with the date it took effect
and its cutoff. Vendors measure "issued when" differently:

* Chrome (for events since 2024) uses the leaf's earliest embedded SCT
  timestamp (:attr:`Basis.SCT`), falling back to notBefore when the leaf has
  no SCT;
* Mozilla and Apple use the leaf's notBefore (:attr:`Basis.NOT_BEFORE`).

A chain matches an event by SHA-256 fingerprint of any certificate on its
path or of the trust-store root it reaches (exact, where we know them: taken
from the Mozilla root store as shipped in Debian's ``ca-certificates``), or
else by the *leaf issuer's* organisation. Using only the leaf's issuer keeps
successors clean: "GeoTrust TLS RSA CA G1" is issued by DigiCert with
O=DigiCert Inc, and Google's and Apple's managed sub-CAs under GeoTrust roots
(exempted by the vendors) have their own O.

docs/distrust.md lists every event with its sources. Where a date below is
marked approximate in ``note``, check the linked announcement before relying
on it to the day.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from certman.errors import ConfigError
from certman.inspector.chain import raw_names

UTC = dt.UTC


class Basis(enum.StrEnum):
    """What date of the leaf a vendor compares with its cutoff."""

    SCT = "sct"
    NOT_BEFORE = "not-before"


@dataclass(frozen=True)
class VendorAction:
    """One vendor's distrust step.

    From ``effective`` on, the vendor distrusts certificates issued after
    ``issued_after`` and/or before ``issued_before`` (neither: all of them).
    """

    vendor: str
    effective: dt.date
    issued_after: dt.datetime | None = None
    issued_before: dt.datetime | None = None
    basis: Basis = Basis.NOT_BEFORE
    reference: str = ""

    def applies(self, issued_sct: dt.datetime, issued_nb: dt.datetime) -> bool:
        """Whether this step distrusts a leaf issued at these dates (ignores ``effective``)."""
        issued = issued_sct if self.basis is Basis.SCT else issued_nb
        if self.issued_after is not None and issued <= self.issued_after:
            return False
        return not (self.issued_before is not None and issued >= self.issued_before)

    def describe(self) -> str:
        """E.g. ``Chrome from 2024-11-12 (SCT after 2024-11-11)``."""
        basis = "SCT" if self.basis is Basis.SCT else "notBefore"
        cut = []
        if self.issued_after is not None:
            cut.append(f"{basis} after {self.issued_after.date()}")
        if self.issued_before is not None:
            cut.append(f"{basis} before {self.issued_before.date()}")
        scope = f" ({', '.join(cut)})" if cut else " (all certificates)"
        return f"{self.vendor} from {self.effective}{scope}"


@dataclass(frozen=True)
class NamePattern:
    """A distinguished-name pattern such as ``O=Example CA`` or ``CN=X,O=Y``.

    Matches a name that has every given attribute with the given value
    (case-insensitive, whitespace-normalised).
    """

    attributes: tuple[tuple[str, str], ...]

    _KEYS: ClassVar[dict[str, x509.ObjectIdentifier]] = {
        "CN": NameOID.COMMON_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "C": NameOID.COUNTRY_NAME,
        "L": NameOID.LOCALITY_NAME,
        "ST": NameOID.STATE_OR_PROVINCE_NAME,
    }

    @classmethod
    def parse(cls, text: str) -> NamePattern:
        """Parse ``KEY=value[,KEY=value...]`` (``\\,`` escapes a comma); ConfigError if bad."""
        attrs: list[tuple[str, str]] = []
        for part in re.split(r"(?<!\\),", text):
            key, sep, value = part.partition("=")
            key = key.strip().upper()
            if not sep or key not in cls._KEYS or not value.strip():
                raise ConfigError(
                    f"bad distrust pattern {text!r}: expected KEY=value with KEY in "
                    f"{', '.join(cls._KEYS)} (e.g. 'O=Example CA')",
                    code="bad-distrust-pattern",
                )
            attrs.append((key, _norm(value.replace("\\,", ","))))
        return cls(tuple(attrs))

    def matches(self, name: x509.Name) -> bool:
        """Whether ``name`` carries every attribute of the pattern."""
        for key, value in self.attributes:
            values = {_norm(str(a.value)) for a in name.get_attributes_for_oid(self._KEYS[key])}
            if value not in values:
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.attributes)


@dataclass(frozen=True)
class DistrustEvent:
    """A CA distrust: who, when, by which vendors, and how to recognise it.

    ``organizations`` match the leaf issuer's O (normalised); ``patterns``
    (user entries) match the issuer of any certificate on the path;
    ``fingerprints`` match any certificate on the path or the trust anchor.
    """

    id: str
    name: str
    announced: dt.date
    actions: tuple[VendorAction, ...]
    organizations: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()
    patterns: tuple[NamePattern, ...] = ()
    exempt_organizations: frozenset[str] = frozenset()
    references: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DistrustMatch:
    """An event that affects a chain, and the vendor steps that apply."""

    event: DistrustEvent
    matched_by: str
    active: tuple[VendorAction, ...]
    pending: tuple[VendorAction, ...] = field(default=())

    def message(self) -> str:
        """One line naming the event, the vendors and the dates."""
        parts = [a.describe() for a in self.active]
        parts += [f"{a.describe()} [scheduled]" for a in self.pending]
        return f"{self.event.name}: distrusted by {'; '.join(parts)} (matched {self.matched_by})"


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _orgs(*names: str) -> frozenset[str]:
    return frozenset(_norm(n) for n in names)


CHROME, MOZILLA, APPLE = "Chrome", "Mozilla", "Apple"
NB, SCT = Basis.NOT_BEFORE, Basis.SCT

EVENTS: tuple[DistrustEvent, ...] = (
    DistrustEvent(
        id="cnnic-2015",
        name="CNNIC (2015)",
        announced=_d("2015-04-01"),
        organizations=_orgs("China Internet Network Information Center", "CNNIC"),
        actions=(
            VendorAction(
                CHROME,
                _d("2015-04-01"),
                issued_after=_t("2015-04-01T00:00:00"),
                reference="https://security.googleblog.com/2015/03/maintaining-digital-certificate-security.html",
            ),
            VendorAction(
                MOZILLA,
                _d("2015-04-02"),
                issued_after=_t("2015-04-01T00:00:00"),
                reference="https://blog.mozilla.org/security/2015/04/02/distrusting-new-cnnic-certificates/",
            ),
        ),
        references=(
            "https://security.googleblog.com/2015/03/maintaining-digital-certificate-security.html",
            "https://blog.mozilla.org/security/2015/04/02/distrusting-new-cnnic-certificates/",
        ),
        note="Both vendors later removed the CNNIC roots entirely.",
    ),
    DistrustEvent(
        id="wosign-startcom-2016",
        name="WoSign and StartCom (2016)",
        announced=_d("2016-10-24"),
        organizations=_orgs(
            "WoSign CA Limited",
            "WoSign",
            "StartCom Ltd.",
            "StartCom Ltd",
            "StartCom Ltd. (Start Commercial Limited)",
        ),
        actions=(
            VendorAction(
                CHROME,
                _d("2017-01-31"),
                issued_after=_t("2016-10-21T00:00:00"),
                reference="https://security.googleblog.com/2016/10/distrusting-wosign-and-startcom.html",
            ),
            VendorAction(
                CHROME,
                _d("2017-09-05"),
                reference="https://security.googleblog.com/2017/07/final-removal-of-trust-in-wosign-and.html",
            ),
            VendorAction(
                MOZILLA,
                _d("2017-01-24"),
                issued_after=_t("2016-10-21T00:00:00"),
                reference="https://blog.mozilla.org/security/2016/10/24/distrusting-new-wosign-and-startcom-certificates/",
            ),
            VendorAction(
                APPLE,
                _d("2016-12-01"),
                issued_after=_t("2016-12-01T00:00:00"),
                reference="https://support.apple.com/en-us/HT204132",
            ),
        ),
        references=(
            "https://security.googleblog.com/2016/10/distrusting-wosign-and-startcom.html",
            "https://security.googleblog.com/2017/07/final-removal-of-trust-in-wosign-and.html",
            "https://blog.mozilla.org/security/2016/10/24/distrusting-new-wosign-and-startcom-certificates/",
            "https://support.apple.com/en-us/HT204132",
        ),
        note="Apple's date is approximate; Mozilla and Apple later removed the roots.",
    ),
    DistrustEvent(
        id="symantec-2018",
        name="Symantec PKI: Symantec, GeoTrust, thawte, VeriSign, RapidSSL, Equifax (2018)",
        announced=_d("2017-09-11"),
        organizations=_orgs(
            "Symantec Corporation",
            "GeoTrust Inc.",
            "GeoTrust, Inc.",
            "thawte, Inc.",
            "Thawte Consulting cc",
            "Thawte Consulting (Pty) Ltd.",
            "VeriSign, Inc.",
            "RapidSSL",
            "Equifax",
            "Equifax Secure Inc.",
            "Equifax Secure",
        ),
        exempt_organizations=_orgs("Google Inc", "Google Trust Services", "Apple Inc."),
        actions=(
            VendorAction(
                CHROME,
                _d("2018-04-17"),
                issued_before=_t("2016-06-01T00:00:00"),
                reference="https://security.googleblog.com/2017/09/chromes-plan-to-distrust-symantec.html",
            ),
            VendorAction(
                CHROME,
                _d("2018-10-16"),
                reference="https://security.googleblog.com/2017/09/chromes-plan-to-distrust-symantec.html",
            ),
            VendorAction(
                MOZILLA,
                _d("2018-05-09"),
                issued_before=_t("2016-06-01T00:00:00"),
                reference="https://blog.mozilla.org/security/2018/03/12/distrust-symantec-tls-certificates/",
            ),
            VendorAction(
                MOZILLA,
                _d("2018-10-23"),
                reference="https://blog.mozilla.org/security/2018/03/12/distrust-symantec-tls-certificates/",
            ),
            VendorAction(
                APPLE,
                _d("2018-09-17"),
                reference="https://support.apple.com/en-us/HT208860",
            ),
        ),
        references=(
            "https://security.googleblog.com/2017/09/chromes-plan-to-distrust-symantec.html",
            "https://blog.mozilla.org/security/2018/03/12/distrust-symantec-tls-certificates/",
            "https://support.apple.com/en-us/HT208860",
        ),
        note="Google- and Apple-operated sub-CAs were exempt. DigiCert's successor CAs "
        "(O=DigiCert Inc) are not affected. Apple's date is approximate (iOS 12 / macOS 10.14).",
    ),
    DistrustEvent(
        id="camerfirma-2021",
        name="Camerfirma (2021)",
        announced=_d("2021-01-25"),
        organizations=_orgs(
            "AC Camerfirma S.A.", "AC Camerfirma SA", "AC Camerfirma SA CIF A82743287"
        ),
        actions=(
            VendorAction(
                CHROME,
                _d("2021-04-13"),
                reference="https://groups.google.com/a/chromium.org/g/net-dev/c/3aw7uz3x2Xs",
            ),
            VendorAction(
                MOZILLA,
                _d("2021-06-01"),
                reference="https://wiki.mozilla.org/CA/Camerfirma_Issues",
            ),
        ),
        references=(
            "https://groups.google.com/a/chromium.org/g/net-dev/c/3aw7uz3x2Xs",
            "https://wiki.mozilla.org/CA/Camerfirma_Issues",
        ),
        note="Chrome 90 removed trust; Mozilla's date is approximate.",
    ),
    DistrustEvent(
        id="trustcor-2022",
        name="TrustCor (2022)",
        announced=_d("2022-11-30"),
        organizations=_orgs("TrustCor Systems S. de R.L."),
        fingerprints=frozenset(
            {
                "5a885db19c01d912c5759388938cafbbdf031ab2d48e91ee15589b42971d039c",
                "d40e9c86cd8fe468c1776959f49ea774fa548684b6c406f3909261f4dce2575c",
                "0753e940378c1bd5e3836e395daea5cb839e5046f1bd0eae1951cf10fec7c965",
            }
        ),
        actions=(
            VendorAction(
                MOZILLA,
                _d("2022-12-01"),
                issued_after=_t("2022-11-30T00:00:00"),
                reference="https://groups.google.com/a/mozilla.org/g/dev-security-policy/c/oxX69KFvsm4",
            ),
        ),
        references=(
            "https://groups.google.com/a/mozilla.org/g/dev-security-policy/c/oxX69KFvsm4",
            "https://bugzilla.mozilla.org/show_bug.cgi?id=1803665",
        ),
        note="Microsoft also removed TrustCor; Chrome's root store never included it.",
    ),
    DistrustEvent(
        id="etugra-2023",
        name="e-Tugra (2023)",
        announced=_d("2023-02-01"),
        organizations=_orgs(
            "E-Tuğra EBG Bilişim Teknolojileri ve Hizmetleri A.Ş.", "E-Tugra EBG A.S."
        ),
        fingerprints=frozenset(
            {
                "b0bfd52bb0d7d9bd92bf5d4dc13da255c02c542f378365ea893911f55e55f23c",
                "873f4685fa7f563625252e6d36bcd7f16fc24951f264e47e1b954f4908cdca13",
                "ef66b0b10a3cdb9f2e3648c76bd2af18ead2bfe6f117655e28c4060da1a3f4c2",
            }
        ),
        actions=(
            VendorAction(
                MOZILLA,
                _d("2023-07-01"),
                reference="https://bugzilla.mozilla.org/show_bug.cgi?id=1801345",
            ),
            VendorAction(
                APPLE,
                _d("2023-09-18"),
                reference="https://support.apple.com/en-us/HT213917",
            ),
        ),
        references=(
            "https://bugzilla.mozilla.org/show_bug.cgi?id=1801345",
            "https://support.apple.com/en-us/HT213917",
        ),
        note="Dates approximate (root removals in NSS and in iOS 17 / macOS 14).",
    ),
    DistrustEvent(
        id="globaltrust-2024",
        name="GLOBALTRUST / e-commerce monitoring (2024)",
        announced=_d("2024-05-01"),
        organizations=_orgs("e-commerce monitoring GmbH"),
        fingerprints=frozenset(
            {"9a296a5182d1d451a2e37f439b74daafa267523329f90f9a0d2007c334e23c9a"}
        ),
        actions=(
            VendorAction(
                MOZILLA,
                _d("2024-07-01"),
                issued_after=_t("2024-06-30T00:00:00"),
                reference="https://bugzilla.mozilla.org/show_bug.cgi?id=1889711",
            ),
        ),
        references=("https://bugzilla.mozilla.org/show_bug.cgi?id=1889711",),
        note="Dates approximate: check the Mozilla bug before relying on them.",
    ),
    DistrustEvent(
        id="entrust-2024",
        name="Entrust and AffirmTrust (2024)",
        announced=_d("2024-06-27"),
        organizations=_orgs("Entrust, Inc.", "Entrust.net", "AffirmTrust", "Entrust Limited"),
        fingerprints=frozenset(
            {
                "0376ab1d54c5f9803ce4b2e201a0ee7eef7b57b636e8a93c9b8d4860c96f5fa7",
                "0a81ec5a929777f145904af38d5d509f66b5e2c58fcdb531058b0e17f3f0b41b",
                "70a73f7f376b60074248904534b11482d5bf0e698ecc498df52577ebf2e93b9a",
                "bd71fdf6da97e4cf62d1647add2581b07d79adf8397eb4ecba9c5e8488821423",
                "6dc47172e01cbcb0bf62580d895fe2b8ac9ad4f873801e0c10b9c837d21eb177",
                "73c176434f1bc6d5adf45b0e76e727287c8de57616c1e6e6141a2b2cbc7d8e4c",
                "02ed0eb28c14da45165c566791700d6451d7fb56f0b2ab1d3b8eb070e56edff5",
                "43df5774b03e7fef5fe40d931a7bedf1bb2e6b42738c4e6d3841103d3aa7f339",
                "db3517d1f6732a2d5ab97c533ec70779ee3270a62fb4ac4238372460e6f01e88",
            }
        ),
        actions=(
            VendorAction(
                CHROME,
                _d("2024-11-12"),
                issued_after=_t("2024-11-11T23:59:59"),
                basis=SCT,
                reference="https://security.googleblog.com/2024/06/sustaining-digital-certificate-security.html",
            ),
            VendorAction(
                MOZILLA,
                _d("2024-11-30"),
                issued_after=_t("2024-11-30T00:00:00"),
                reference="https://groups.google.com/a/mozilla.org/g/dev-security-policy/c/jCvkhBjg6Yw",
            ),
            VendorAction(
                APPLE,
                _d("2024-11-15"),
                issued_after=_t("2024-11-15T00:00:00"),
                reference="https://support.apple.com/en-us/121668",
            ),
        ),
        references=(
            "https://security.googleblog.com/2024/06/sustaining-digital-certificate-security.html",
            "https://groups.google.com/a/mozilla.org/g/dev-security-policy/c/jCvkhBjg6Yw",
            "https://support.apple.com/en-us/121668",
        ),
        note="Certificates issued before the cutoffs stay trusted until they expire.",
    ),
    DistrustEvent(
        id="chunghwa-2025",
        name="Chunghwa Telecom (2025)",
        announced=_d("2025-05-30"),
        organizations=_orgs("Chunghwa Telecom Co., Ltd.", "Chunghwa Telecom Co.,Ltd."),
        fingerprints=frozenset(
            {
                "c0a6f4dc63a24bfdcf54ef2a6a082a0a72de35803e2ff5ff527ae5d87206dfd5",
                "f015ce3cc239bfef064be9f1d2c417e1a0264a0a94be1f0c8d121864eb6949cc",
            }
        ),
        actions=(
            VendorAction(
                CHROME,
                _d("2025-08-01"),
                issued_after=_t("2025-07-31T23:59:59"),
                basis=SCT,
                reference="https://security.googleblog.com/2025/05/sustaining-digital-certificate-security-chrome-root-store-changes.html",
            ),
        ),
        references=(
            "https://security.googleblog.com/2025/05/sustaining-digital-certificate-security-chrome-root-store-changes.html",
        ),
        note="Chrome 139 and later.",
    ),
    DistrustEvent(
        id="netlock-2025",
        name="NetLock (2025)",
        announced=_d("2025-05-30"),
        organizations=_orgs("NetLock Kft.", "NETLOCK Ltd."),
        fingerprints=frozenset(
            {"6c61dac3a2def031506be036d2a6fe401994fbd13df9c8d466599274c446ec98"}
        ),
        actions=(
            VendorAction(
                CHROME,
                _d("2025-08-01"),
                issued_after=_t("2025-07-31T23:59:59"),
                basis=SCT,
                reference="https://security.googleblog.com/2025/05/sustaining-digital-certificate-security-chrome-root-store-changes.html",
            ),
        ),
        references=(
            "https://security.googleblog.com/2025/05/sustaining-digital-certificate-security-chrome-root-store-changes.html",
        ),
        note="Chrome 139 and later.",
    ),
)


def user_event(
    pattern: str,
    *,
    name: str | None = None,
    issued_after: dt.datetime | None = None,
    reference: str = "",
) -> DistrustEvent:
    """A user's own distrusted issuer: ``O=Example CA`` style, or ``sha256:HEX``."""
    text = pattern.strip()
    actions = (VendorAction("you", dt.date.min, issued_after=issued_after, reference=reference),)
    if text.lower().startswith("sha256:"):
        fp = text[7:].replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", fp):
            raise ConfigError(f"bad fingerprint in {pattern!r}", code="bad-distrust-pattern")
        return DistrustEvent(
            id=f"user:{fp[:16]}",
            name=name or f"distrusted by you ({text})",
            announced=dt.date.min,
            actions=actions,
            fingerprints=frozenset({fp}),
        )
    parsed = NamePattern.parse(text)
    return DistrustEvent(
        id=f"user:{parsed}",
        name=name or f"distrusted by you ({text})",
        announced=dt.date.min,
        actions=actions,
        patterns=(parsed,),
    )


def load_distrust_file(path: str | Path) -> tuple[DistrustEvent, ...]:
    """Read user distrust entries from a TOML file.

    Format (every key but one of ``issuer``/``fingerprint`` optional)::

        [[distrust]]
        name = "Example CA key compromise"
        issuer = "O=Example CA"          # or: fingerprint = "sha256:..."
        issued_after = 2024-01-01        # notBefore cutoff; omit for all
        reference = "https://..."

    Raises ConfigError for an unreadable file or a bad entry.
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"distrust file {path}: {exc}", code="bad-distrust-file") from exc
    entries = doc.get("distrust", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: [[distrust]] must be a list", code="bad-distrust-file")
    events: list[DistrustEvent] = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: entry {n} is not a table", code="bad-distrust-file")
        pattern = entry.get("issuer") or entry.get("fingerprint")
        if not isinstance(pattern, str):
            raise ConfigError(
                f'{path}: entry {n} needs issuer = "O=..." or fingerprint = "sha256:..."',
                code="bad-distrust-file",
            )
        after = entry.get("issued_after")
        cutoff: dt.datetime | None = None
        if isinstance(after, dt.datetime):
            cutoff = after if after.tzinfo else after.replace(tzinfo=UTC)
        elif isinstance(after, dt.date):
            cutoff = dt.datetime(after.year, after.month, after.day, tzinfo=UTC)
        elif after is not None:
            raise ConfigError(
                f"{path}: entry {n}: issued_after must be a date", code="bad-distrust-file"
            )
        events.append(
            user_event(
                pattern,
                name=entry.get("name"),
                issued_after=cutoff,
                reference=str(entry.get("reference", "")),
            )
        )
    return tuple(events)


def earliest_sct(cert: x509.Certificate) -> dt.datetime | None:
    """The earliest embedded SCT timestamp of ``cert`` (UTC), or None."""
    try:
        ext = cert.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        )
    except (x509.ExtensionNotFound, ValueError):
        return None
    times: list[dt.datetime] = [sct.timestamp for sct in ext.value]
    if not times:
        return None
    return min(times).replace(tzinfo=UTC)


def match_chain(
    path: Sequence[x509.Certificate],
    fingerprints: Iterable[str],
    *,
    now: dt.datetime,
    events: Iterable[DistrustEvent] = EVENTS,
    issuer_der: bytes | None = None,
) -> list[DistrustMatch]:
    """Events that affect the chain whose path (leaf first) is ``path``.

    ``fingerprints`` are the SHA-256 hex fingerprints of the path's
    certificates and of its trust anchor. A match whose vendor steps all
    exclude this leaf (issued before the cutoff) is not returned; one whose
    steps are only in the future is returned with ``pending`` steps.
    ``issuer_der`` (the leaf's issuer name as DER, when the caller has it)
    saves re-reading it.
    """
    if not path:
        return []
    leaf = path[0]
    index = _index_for(events)
    fps = set(fingerprints)
    leaf_issuer_org_raw, leaf_issuer_org = _issuer_org(leaf, issuer_der)
    candidates: set[int] = set(index.pattern_events)
    if fps & index.fingerprints:
        candidates.update(i for fp in fps for i in index.by_fingerprint.get(fp, ()))
    if leaf_issuer_org is not None:
        candidates.update(index.by_org.get(leaf_issuer_org, ()))
    if not candidates:
        return []
    issued_nb = leaf.not_valid_before_utc
    issued_sct: dt.datetime | None = None
    out: list[DistrustMatch] = []
    for event in (index.events[i] for i in sorted(candidates)):
        matched_by = ""
        if event.exempt_organizations and leaf_issuer_org in event.exempt_organizations:
            continue
        hit = event.fingerprints & fps
        if hit:
            matched_by = f"fingerprint {sorted(hit)[0][:16]}…"
        elif leaf_issuer_org is not None and leaf_issuer_org in event.organizations:
            matched_by = f"issuer O={leaf_issuer_org_raw}"
        else:
            for pattern in event.patterns:
                if any(pattern.matches(c.issuer) for c in path):
                    matched_by = f"issuer {pattern}"
                    break
        if not matched_by:
            continue
        if issued_sct is None:
            issued_sct = earliest_sct(leaf) or issued_nb
        active: list[VendorAction] = []
        pending: list[VendorAction] = []
        for action in event.actions:
            if not action.applies(issued_sct, issued_nb):
                continue
            (active if action.effective <= now.date() else pending).append(action)
        # One line per vendor: the first applicable step is enough.
        active = _first_per_vendor(active)
        pending = [
            a for a in _first_per_vendor(pending) if a.vendor not in {x.vendor for x in active}
        ]
        if active or pending:
            out.append(DistrustMatch(event, matched_by, tuple(active), tuple(pending)))
    return out


@dataclass(frozen=True)
class _Index:
    events: tuple[DistrustEvent, ...]
    fingerprints: frozenset[str]
    by_fingerprint: dict[str, tuple[int, ...]]
    by_org: dict[str, tuple[int, ...]]
    pattern_events: tuple[int, ...]


_LAST_INDEX: list[tuple[object, _Index]] = []


def _index_for(events: Iterable[DistrustEvent]) -> _Index:
    # A scan passes the same events object for every bundle: index it once,
    # so a bundle only looks at the events its fingerprints/issuer can match.
    if _LAST_INDEX and _LAST_INDEX[0][0] is events:
        return _LAST_INDEX[0][1]
    evs = tuple(events)
    by_fp: dict[str, list[int]] = {}
    by_org: dict[str, list[int]] = {}
    for i, e in enumerate(evs):
        for fp in e.fingerprints:
            by_fp.setdefault(fp, []).append(i)
        for org in e.organizations:
            by_org.setdefault(org, []).append(i)
    index = _Index(
        evs,
        frozenset(by_fp),
        {k: tuple(v) for k, v in by_fp.items()},
        {k: tuple(v) for k, v in by_org.items()},
        tuple(i for i, e in enumerate(evs) if e.patterns),
    )
    _LAST_INDEX[:] = [(events, index)]
    return index


_ORGS: dict[bytes, tuple[str | None, str | None]] = {}


def _issuer_org(
    cert: x509.Certificate, issuer_der: bytes | None = None
) -> tuple[str | None, str | None]:
    """(O as written, normalised O) of ``cert``'s issuer, memoised by issuer DER."""
    key = issuer_der if issuer_der is not None else raw_names(cert)[0]
    hit = _ORGS.get(key)
    if hit is None:
        attrs = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        raw = str(attrs[0].value) if attrs else None
        hit = (raw, _norm(raw) if raw is not None else None)
        if len(_ORGS) > 512:
            _ORGS.clear()
        _ORGS[key] = hit
    return hit


def _first_per_vendor(actions: list[VendorAction]) -> list[VendorAction]:
    seen: dict[str, VendorAction] = {}
    for a in sorted(actions, key=lambda a: a.effective):
        seen.setdefault(a.vendor, a)
    return list(seen.values())
