"""The rule registry: each rule a small pure function with a stable id.

A rule looks at a :class:`RuleContext` (the bundle, per-certificate facts,
the chain analysis, ``now`` and the options) and yields ``(cert_index,
message)`` pairs; the registry turns them into :class:`Finding` values with
the rule's id and severity. Rules never raise for bad certificates and never
read the clock. Rule ids are stable: scripts match on them.

To add a rule, decorate a function with :func:`rule`; it then appears in
``RULES``, in ``certman scan --only`` and in docs/inspector.md's table.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certman.inspector.chain import ChainAnalysis, public_key_of
from certman.inspector.der import QuickFacts
from certman.inspector.distrust import DistrustEvent, DistrustMatch, match_chain
from certman.inspector.load import Bundle
from certman.inspector.model import CertificateInfo, Finding, Severity

RuleOutput = Iterable[tuple[int | None, str]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: stable ``id``, ``severity``, what it means, how to fix."""

    id: str
    severity: Severity
    summary: str
    fix: str
    check: Callable[[RuleContext], RuleOutput]

    def run(self, ctx: RuleContext) -> list[Finding]:
        """The rule's findings for one bundle."""
        return [Finding(self.id, self.severity, msg, idx) for idx, msg in self.check(ctx)]

    def extend(self, ctx: RuleContext, out: list[Finding]) -> None:
        """Append the rule's findings to ``out`` (the scan's hot path: no list per rule)."""
        for idx, msg in self.check(ctx):
            out.append(Finding(self.id, self.severity, msg, idx))


RULES: dict[str, Rule] = {}


def rule(
    rule_id: str, severity: Severity, summary: str, fix: str
) -> Callable[[Callable[[RuleContext], RuleOutput]], Callable[[RuleContext], RuleOutput]]:
    """Register the decorated check function as rule ``rule_id``."""

    def register(func: Callable[[RuleContext], RuleOutput]) -> Callable[[RuleContext], RuleOutput]:
        if rule_id in RULES:
            raise ValueError(f"duplicate rule id {rule_id}")
        RULES[rule_id] = Rule(rule_id, severity, summary, fix, func)
        return func

    return register


class RuleContext:
    """Everything a rule may look at, for one bundle. Derived facts are lazy."""

    def __init__(
        self,
        *,
        bundle: Bundle,
        infos: Sequence[CertificateInfo],
        chain: ChainAnalysis,
        now: dt.datetime,
        expiring_days: int,
        host: str | None,
        keys: Sequence[PrivateKeyTypes],
        distrust: Sequence[DistrustEvent],
        facts: Sequence[QuickFacts | None] = (),
    ) -> None:
        self.bundle = bundle
        self.certs = bundle.certificates
        self.infos = infos
        self.chain = chain
        self.now = now
        self.expiring_days = expiring_days
        self.host = host
        self.keys = keys
        self.distrust = distrust
        self.facts = facts
        self._distrust_matches: list[DistrustMatch] | None = None

    @property
    def leaf_index(self) -> int:
        """Bundle index of the end entity."""
        return self.chain.leaf

    @property
    def distrust_matches(self) -> list[DistrustMatch]:
        """Distrust events affecting the built path (computed once per context)."""
        # Not functools.cached_property: before Python 3.12 it takes a lock
        # on every first access, a few microseconds per source in a scan.
        if self._distrust_matches is None:
            self._distrust_matches = self._match_distrust()
        return self._distrust_matches

    def _match_distrust(self) -> list[DistrustMatch]:
        path = [self.certs[i] for i in self.chain.path]
        fps = [self.infos[i].sha256 for i in self.chain.path]
        if self.chain.anchor_sha256:
            fps.append(self.chain.anchor_sha256)
        leaf_facts = self.facts[self.chain.leaf] if self.facts else None
        issuer_der = leaf_facts.issuer if leaf_facts is not None else None
        return match_chain(path, fps, now=self.now, events=self.distrust, issuer_der=issuer_der)


_ZERO = dt.timedelta(0)


def _date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _days(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 86400)


# --- validity -------------------------------------------------------------


@rule(
    "expired",
    Severity.CRITICAL,
    "A certificate in the bundle is past its notAfter.",
    "Renew it (for an intermediate: install the CA's current intermediate).",
)
def _expired(ctx: RuleContext) -> RuleOutput:
    for info in ctx.infos:
        if ctx.now > info.not_after:
            ago = _days(ctx.now - info.not_after)
            yield info.index, f"expired {_date(info.not_after)} ({ago} days ago)"


@rule(
    "not-yet-valid",
    Severity.HIGH,
    "A certificate's notBefore is in the future.",
    "Check the issuing system's clock, or wait; clients reject it until then.",
)
def _not_yet_valid(ctx: RuleContext) -> RuleOutput:
    for info in ctx.infos:
        if ctx.now < info.not_before:
            yield info.index, f"not valid before {_date(info.not_before)}"


@rule(
    "expiring-soon",
    Severity.MEDIUM,
    "A certificate expires within the threshold (default 30 days).",
    "Renew it now (certman renew), or check why automatic renewal did not.",
)
def _expiring_soon(ctx: RuleContext) -> RuleOutput:
    limit = dt.timedelta(days=ctx.expiring_days)
    for info in ctx.infos:
        left = info.not_after - ctx.now
        if _ZERO <= left <= limit:
            yield info.index, f"expires {_date(info.not_after)} (in {_days(left)} days)"


# CA/Browser Forum Baseline Requirements: maximum validity by notBefore.
VALIDITY_LIMITS: tuple[tuple[dt.datetime, int], ...] = (
    (dt.datetime(2029, 3, 15, tzinfo=dt.UTC), 47),
    (dt.datetime(2027, 3, 15, tzinfo=dt.UTC), 100),
    (dt.datetime(2026, 3, 15, tzinfo=dt.UTC), 200),
    (dt.datetime(2020, 9, 1, tzinfo=dt.UTC), 398),
    (dt.datetime(2018, 3, 1, tzinfo=dt.UTC), 825),
)


@rule(
    "validity-too-long",
    Severity.MEDIUM,
    "A TLS server certificate's lifetime exceeds the CA/B Forum limit for its "
    "notBefore (825 days from 2018-03-01, 398 from 2020-09-01, 200 from 2026-03-15, "
    "100 from 2027-03-15, 47 from 2029-03-15).",
    "Reissue with a shorter lifetime; browsers reject over-long certificates.",
)
def _validity_too_long(ctx: RuleContext) -> RuleOutput:
    info = ctx.infos[ctx.leaf_index]
    if info.is_ca:
        return
    for since, days in VALIDITY_LIMITS:
        if info.not_before >= since:
            # BR 1.2.1: the validity period includes both ends (+1 second).
            lifetime = info.not_after - info.not_before + dt.timedelta(seconds=1)
            if lifetime > dt.timedelta(days=days):
                yield (
                    info.index,
                    f"valid for {lifetime.days} days; the limit for certificates issued "
                    f"from {since.date()} is {days}",
                )
            return


# --- keys and signatures ----------------------------------------------------

WEAK_HASHES = {"md2", "md5", "sha1"}


@rule(
    "weak-signature-hash",
    Severity.HIGH,
    "A certificate is signed with MD2, MD5 or SHA-1 (a self-signed root's own "
    "signature does not count: nobody verifies it).",
    "Reissue with SHA-256; replace the intermediate with the CA's SHA-256 one.",
)
def _weak_signature_hash(ctx: RuleContext) -> RuleOutput:
    for info in ctx.infos:
        if info.signature_hash in WEAK_HASHES and not info.self_signed:
            yield info.index, f"signed with {info.signature_algorithm}"


ALLOWED_CURVES = {"P-256", "P-384", "P-521"}

# ROCA (CVE-2017-15361): moduli from Infineon's RSALib are 65537^k mod M for
# a primorial M, so modulo each of these small primes they fall in the
# subgroup generated by 65537. A random modulus passes all tests with
# negligible probability. Same primes as the authors' detector
# (github.com/crocs-muni/roca).
ROCA_PRIMES = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73,
    79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157,
    163, 167,
)  # fmt: skip


def _subgroup(p: int) -> frozenset[int]:
    out, x = {1}, 65537 % p
    while x not in out:
        out.add(x)
        x = x * 65537 % p
    return frozenset(out)


ROCA_SUBGROUPS = tuple((p, _subgroup(p)) for p in ROCA_PRIMES)
_ROCA_PRODUCT = math.prod(ROCA_PRIMES)


def roca_vulnerable(modulus: int) -> bool:
    """The ROCA fingerprint test: is ``modulus`` in 65537's subgroup mod every prime?"""
    # One reduction of the 2048+-bit modulus by the primes' product (~220
    # bits); the residues mod each prime are the same, and much cheaper.
    small = modulus % _ROCA_PRODUCT
    return all(small % p in group for p, group in ROCA_SUBGROUPS)


_KEY_PROBLEMS: dict[int, tuple[x509.Certificate, list[str]]] = {}


def key_problems(cert: x509.Certificate, info: CertificateInfo) -> list[str]:
    """Why a certificate's public key is weak (empty when it is fine).

    Memoised per certificate object for CA certificates (intermediates
    recur across a fleet; see chain.py on identity keys).
    """
    if not info.is_ca:
        return _key_problems(cert, info)
    hit = _KEY_PROBLEMS.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    out = _key_problems(cert, info)
    if len(_KEY_PROBLEMS) > 512:
        _KEY_PROBLEMS.clear()
    _KEY_PROBLEMS[id(cert)] = (cert, out)
    return out


def _key_problems(cert: x509.Certificate, info: CertificateInfo) -> list[str]:
    key = info.key
    out: list[str] = []
    if key.type == "RSA":
        if key.size < 2048:
            out.append(f"RSA key of {key.size} bits (minimum 2048)")
        pub = public_key_of(cert, remember=info.is_ca)
        if isinstance(pub, rsa.RSAPublicKey) and roca_vulnerable(pub.public_numbers().n):
            out.append("RSA modulus has the ROCA fingerprint (CVE-2017-15361, Infineon RSALib)")
    elif key.type == "EC" and key.curve not in ALLOWED_CURVES:
        out.append(f"EC curve {key.curve} (only P-256, P-384, P-521 are accepted)")
    elif key.type == "DSA":
        out.append(f"DSA key ({key.size} bits): not accepted for TLS by browsers")
    return out


@rule(
    "weak-key",
    Severity.HIGH,
    "A certificate's key is RSA under 2048 bits, on a curve other than "
    "P-256/P-384/P-521, DSA, or an RSA modulus with the ROCA fingerprint.",
    "Generate a new key (EC P-256 or RSA 2048+) on a fixed device/library, and reissue.",
)
def _weak_key(ctx: RuleContext) -> RuleOutput:
    for cert, info in zip(ctx.certs, ctx.infos, strict=True):
        for problem in key_problems(cert, info):
            yield info.index, problem


@rule(
    "key-mismatch",
    Severity.CRITICAL,
    "A private key was given (or found in the bundle) but it does not belong "
    "to the end-entity certificate.",
    "Pair the certificate with the key it was issued for (check the CSR you sent).",
)
def _key_mismatch(ctx: RuleContext) -> RuleOutput:
    if not ctx.keys:
        return
    try:
        leaf_spki = _spki(ctx.certs[ctx.leaf_index].public_key())
    except (ValueError, UnsupportedAlgorithm):  # a malformed or unknown key matches nothing
        yield ctx.leaf_index, "the certificate's public key cannot be read, so no key matches it"
        return
    if any(_spki(k.public_key()) == leaf_spki for k in ctx.keys):
        return
    yield ctx.leaf_index, f"none of the {len(ctx.keys)} private key(s) matches this certificate"


def _spki(pub: object) -> bytes:
    public_bytes = getattr(pub, "public_bytes", None)
    if public_bytes is None:
        return b""
    data = public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bytes(data)


# --- trust ------------------------------------------------------------------


@rule(
    "distrusted-ca",
    Severity.CRITICAL,
    "The chain leads to a CA that browser vendors distrust (or will) for a "
    "certificate issued when this one was (see docs/distrust.md), or to an "
    "issuer you distrust (--distrust).",
    "Replace the certificate with one from a trusted CA before the vendor's date.",
)
def _distrusted_ca(ctx: RuleContext) -> RuleOutput:
    for match in ctx.distrust_matches:
        yield ctx.leaf_index, match.message()


@rule(
    "chain-order",
    Severity.MEDIUM,
    "The certificates are not sent as end entity first, then each one's issuer.",
    "Concatenate leaf, then intermediate(s) in order (fullchain.pem does this).",
)
def _chain_order(ctx: RuleContext) -> RuleOutput:
    ch = ctx.chain
    if ch.out_of_order:
        got = ",".join(str(i) for i in ch.path)
        yield ch.leaf, f"path leaf->root is #{got}; expected the order 0,1,2,..."


@rule(
    "missing-intermediate",
    Severity.HIGH,
    "The chain stops at a certificate whose issuer is neither in the bundle "
    "nor in the trust store: an intermediate was not sent.",
    "Add the issuing CA's intermediate certificate(s) after the leaf (use fullchain.pem).",
)
def _missing_intermediate(ctx: RuleContext) -> RuleOutput:
    ch = ctx.chain
    if not ch.complete and ch.links[ch.path[-1]].status.value == "issuer-missing":
        top = ctx.infos[ch.path[-1]]
        yield top.index, f"issuer {top.issuer} is missing"


@rule(
    "bad-signature",
    Severity.CRITICAL,
    "A certificate's signature does not verify with the key of the certificate "
    "(in the bundle or trust store) that carries its issuer's name.",
    "Send the intermediate that really issued it (a re-keyed CA has several with one name).",
)
def _bad_signature(ctx: RuleContext) -> RuleOutput:
    for i in ctx.chain.bad_signatures:
        yield i, ctx.chain.links[i].detail or "signature does not verify"


@rule(
    "root-included",
    Severity.LOW,
    "The self-signed root is sent with the chain; clients ignore it, it costs bytes.",
    "Drop the root from the served chain (serve leaf + intermediates).",
)
def _root_included(ctx: RuleContext) -> RuleOutput:
    if ctx.chain.root_included is not None:
        yield ctx.chain.root_included, "self-signed root sent in the chain"


@rule(
    "extra-cert",
    Severity.LOW,
    "A certificate in the bundle is not on the path from the end entity to the root "
    "(not checked for files of CA certificates only, such as trust stores).",
    "Remove unrelated certificates from the bundle.",
)
def _extra_cert(ctx: RuleContext) -> RuleOutput:
    if ctx.infos[ctx.leaf_index].is_ca:
        return  # a bundle of CA certificates (a trust store file), not a served chain
    for i in ctx.chain.extra:
        yield i, f"{ctx.infos[i].subject} is not part of the chain"


@rule(
    "untrusted-root",
    Severity.HIGH,
    "The path ends at a root that is not in the trust store (certifi's "
    "Mozilla bundle, or --trust-store FILE).",
    "Use a publicly trusted CA, or pass your private CA with --trust-store.",
)
def _untrusted_root(ctx: RuleContext) -> RuleOutput:
    ch = ctx.chain
    if ch.complete and not ch.trusted:
        top = ctx.infos[ch.path[-1]]
        yield top.index, f"{top.subject} is not in the trust store"


# --- names ------------------------------------------------------------------


def host_matches(host: str, sans: Sequence[str]) -> bool:
    """RFC 6125 matching: exact, or a wildcard in the left-most label only; IPs exactly."""
    host = host.strip().rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return any(_same_ip(ip, s) for s in sans)
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    for san in sans:
        name = san.rstrip(".").lower()
        if name == host:
            return True
        if name.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if rest == name[2:] and label:
                return True
    return False


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, san: str) -> bool:
    try:
        return ipaddress.ip_address(san) == ip
    except ValueError:
        return False


@rule(
    "hostname-mismatch",
    Severity.CRITICAL,
    "The end-entity certificate does not cover the host name asked for (--host).",
    "Reissue with the name in the SAN list (certman issue -d NAME).",
)
def _hostname_mismatch(ctx: RuleContext) -> RuleOutput:
    if ctx.host is None:
        return
    leaf = ctx.infos[ctx.leaf_index]
    if not host_matches(ctx.host, leaf.sans):
        names = ", ".join(leaf.sans) or "no names"
        yield leaf.index, f"{ctx.host} is not covered ({names})"


@rule(
    "no-san",
    Severity.MEDIUM,
    "The end-entity certificate has no subjectAltName; browsers ignore the CN.",
    "Reissue with the host names in the SAN extension.",
)
def _no_san(ctx: RuleContext) -> RuleOutput:
    leaf = ctx.infos[ctx.leaf_index]
    if not leaf.is_ca and not leaf.sans:
        yield leaf.index, "no subjectAltName extension"


@rule(
    "parse-error",
    Severity.MEDIUM,
    "Part of the bundle could not be read (a broken block next to good ones).",
    "Re-export the file; remove or repair the damaged block.",
)
def _parse_error(ctx: RuleContext) -> RuleOutput:
    for problem in ctx.bundle.problems:
        yield None, problem


def run_rules(ctx: RuleContext, only: Iterable[str] | None = None) -> list[Finding]:
    """Run the registered rules (or just ``only``); findings sorted worst first."""
    selected = RULES.values() if only is None else [RULES[r] for r in only if r in RULES]
    findings: list[Finding] = []
    append = findings.append
    for r in selected:  # Rule.extend, inlined: this loop runs 17 times per source
        for idx, msg in r.check(ctx):
            append(Finding(r.id, r.severity, msg, idx))
    findings.sort(key=lambda f: (-f.severity, f.cert if f.cert is not None else -1, f.rule))
    return findings


def curve_name(curve: ec.EllipticCurve) -> str:
    """NIST names for the NIST curves (``P-256``), the SEC name otherwise."""
    return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
        curve.name, curve.name
    )
