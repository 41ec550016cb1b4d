"""``inspect()``: one bundle in, one frozen :class:`Report` out.

This is where loading, the chain analysis and the rules meet. It is pure
apart from per-process caches (parsed intermediates, their facts, signature
results, trust stores), which only make repeated work cheaper.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certman.errors import ConfigError, InspectorError
from certman.inspector.chain import (
    TrustStore,
    analyze_chain,
    default_trust_store,
    fingerprint,
    name_text,
    public_key_of,
)
from certman.inspector.der import QuickFacts, name_text_der, quick_facts, quick_facts_der
from certman.inspector.distrust import EVENTS, DistrustEvent
from certman.inspector.load import DEFAULT_MAX_SIZE, Bundle, load_bundle, load_file, quiet
from certman.inspector.model import CertificateInfo, KeyInfo, Report
from certman.inspector.rules import RULES, RuleContext, curve_name, run_rules


@dataclass(frozen=True)
class InspectOptions:
    """How to inspect: thresholds, which rules, which trust store and distrust list.

    Picklable (it is sent to scan workers): the trust store is a path
    (None: certifi's bundle), not a loaded object.
    """

    expiring_days: int = 30
    rules: frozenset[str] | None = None
    trust_store: str | None = None
    distrust: tuple[DistrustEvent, ...] = EVENTS
    max_size: int = DEFAULT_MAX_SIZE
    password: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.rules is not None:
            unknown = sorted(set(self.rules) - set(RULES))
            if unknown:
                raise ConfigError(
                    f"unknown rule id(s): {', '.join(unknown)} (known: {', '.join(sorted(RULES))})",
                    code="unknown-rule",
                )
        if self.expiring_days < 0:
            raise ConfigError("expiring_days must be >= 0", code="bad-threshold")


@functools.cache
def trust_store_for(path: str | None) -> TrustStore:
    """The trust store at ``path`` (None: certifi), loaded once per process."""
    return default_trust_store() if path is None else TrustStore.from_pem_file(path)


def utc_now(now: dt.datetime | None) -> dt.datetime:
    """``now`` checked to be timezone-aware (converted to UTC), or the current time."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ConfigError("now must be timezone-aware (UTC)", code="naive-datetime")
    return now.astimezone(dt.UTC)


_SIG_OIDS: dict[str, tuple[str, str | None]] = {
    "1.2.840.113549.1.1.2": ("md2WithRSAEncryption", "md2"),
    "1.2.840.113549.1.1.4": ("md5WithRSAEncryption", "md5"),
    "1.2.840.113549.1.1.5": ("sha1WithRSAEncryption", "sha1"),
    "1.2.840.113549.1.1.14": ("sha224WithRSAEncryption", "sha224"),
    "1.2.840.113549.1.1.11": ("sha256WithRSAEncryption", "sha256"),
    "1.2.840.113549.1.1.12": ("sha384WithRSAEncryption", "sha384"),
    "1.2.840.113549.1.1.13": ("sha512WithRSAEncryption", "sha512"),
    "1.2.840.10045.4.1": ("ecdsa-with-SHA1", "sha1"),
    "1.2.840.10045.4.3.1": ("ecdsa-with-SHA224", "sha224"),
    "1.2.840.10045.4.3.2": ("ecdsa-with-SHA256", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa-with-SHA384", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa-with-SHA512", "sha512"),
    "1.2.840.10040.4.3": ("dsa-with-sha1", "sha1"),
    "2.16.840.1.101.3.4.3.2": ("dsa-with-sha256", "sha256"),
    "1.3.101.112": ("ed25519", None),
    "1.3.101.113": ("ed448", None),
}


def _signature(cert: x509.Certificate) -> tuple[str, str | None]:
    oid = cert.signature_algorithm_oid.dotted_string
    known = _SIG_OIDS.get(oid)
    if known is not None:
        return known
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if oid == "1.2.840.113549.1.1.10":
        return "rsassa-pss", algorithm.name if algorithm is not None else None
    return oid, algorithm.name if algorithm is not None else None


def key_info(pub: object) -> KeyInfo:
    """Type, size and curve of a public key."""
    kind = _KINDS.get(type(pub))
    if kind is None:
        kind = _KINDS[type(pub)] = _kind(pub)
    if kind == "RSA" or kind == "DSA":
        size: int = pub.key_size  # type: ignore[attr-defined]
        hit = _KEY_INFOS.get((kind, size))
        if hit is None:
            hit = _KEY_INFOS[(kind, size)] = KeyInfo(kind, size)
        return hit
    if kind == "EC":
        curve = pub.curve  # type: ignore[attr-defined]
        hit = _KEY_INFOS.get((kind, curve.name))
        if hit is None:
            hit = _KEY_INFOS[(kind, curve.name)] = KeyInfo("EC", curve.key_size, curve_name(curve))
        return hit
    if kind == "Ed25519":
        return KeyInfo("Ed25519", 256)
    if kind == "Ed448":
        return KeyInfo("Ed448", 456)
    return KeyInfo(type(pub).__name__, 0)


# Concrete key class -> kind, and the (equal, immutable) KeyInfo values: the
# abstract-class isinstance checks cost a microsecond each, per certificate.
_KINDS: dict[type, str] = {}
_KEY_INFOS: dict[tuple[str, object], KeyInfo] = {}


def _kind(pub: object) -> str:
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(pub, dsa.DSAPublicKey):
        return "DSA"
    return ""


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    out: list[str] = []
    for name in ext.value:
        if isinstance(name, x509.DNSName | x509.IPAddress):
            out.append(str(name.value))
    return tuple(out)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _key(cert: x509.Certificate, remember: bool = False) -> tuple[KeyInfo, object | None]:
    try:
        pub = public_key_of(cert, remember=remember)
    except (ValueError, UnsupportedAlgorithm):
        return KeyInfo("unknown", 0), None
    return key_info(pub), pub


# Per-process caches for CA certificates (they recur across a fleet; leaves
# do not), keyed by object identity like chain.py's: the loader hands out
# one parsed object per distinct intermediate. Each entry holds its
# certificate, so an id cannot be reused while the entry lives.
_INFO_CACHE: dict[int, tuple[x509.Certificate, CertificateInfo]] = {}
_FACTS: dict[int, tuple[x509.Certificate, QuickFacts | None]] = {}
_CACHE_MAX = 512


def _facts(cert: x509.Certificate, index: int, der: bytes | None = None) -> QuickFacts | None:
    """The DER facts of ``cert`` (from ``der`` when the loader kept it), memoised for CAs."""
    hit = _FACTS.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    facts = quick_facts_der(der) if der is not None else None
    if facts is None:
        facts = quick_facts(cert)
    if facts.is_ca if facts is not None else index > 0:
        if len(_FACTS) > _CACHE_MAX:
            _FACTS.clear()
        _FACTS[id(cert)] = (cert, facts)
    return facts


def certificate_info(
    cert: x509.Certificate,
    index: int,
    now: dt.datetime,
    facts: QuickFacts | None = None,
    der: bytes | None = None,
) -> CertificateInfo:
    """The facts about one certificate (memoised per process for CA certificates).

    ``facts`` (from :func:`quick_facts`) saves building name and extension
    objects; without it cryptography's parser is used. ``der`` (the
    certificate's own encoding, when the loader kept it) saves
    re-encoding it for the fingerprint.
    """
    hit = _INFO_CACHE.get(id(cert))
    if hit is not None and hit[0] is cert:
        cached = hit[1]
        days = (cached.not_after - now) // _DAY
        return _with(cached, index, days)
    algorithm, digest = _signature(cert)
    not_after = cert.not_valid_after_utc
    subject_text: str | None = None
    if facts is not None:
        issuer_text = name_text(facts.issuer, cert)
        subject_text = name_text_der(facts.subject)
        sans, is_ca, self_signed = facts.sans, facts.is_ca, facts.issuer == facts.subject
    else:
        issuer_text = cert.issuer.rfc4514_string()
        sans, is_ca, self_signed = _sans(cert), _is_ca(cert), cert.subject == cert.issuer
    if subject_text is None:
        subject_text = cert.subject.rfc4514_string()
    remember = is_ca or (facts is None and index > 0)
    # A DER the walker accepted is exactly the certificate's encoding (its
    # outer element spans it all), so its digest is the fingerprint.
    if der is not None and facts is not None and facts.signature:
        sha256 = hashlib.sha256(der).hexdigest()
    else:
        sha256 = fingerprint(cert)
    info = CertificateInfo(
        index=index,
        subject=subject_text,
        issuer=issuer_text,
        serial=format(cert.serial_number, "X"),
        sha256=sha256,
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        days_left=(not_after - now) // _DAY,
        key=_key(cert, remember)[0],
        signature_algorithm=algorithm,
        signature_hash=digest,
        sans=sans,
        is_ca=is_ca,
        self_signed=self_signed,
    )
    if remember:
        if len(_INFO_CACHE) > _CACHE_MAX:
            _INFO_CACHE.clear()
        _INFO_CACHE[id(cert)] = (cert, info)
    return info


_DAY = dt.timedelta(days=1)


def _with(info: CertificateInfo, index: int, days: int) -> CertificateInfo:
    if info.index == index and info.days_left == days:
        return info
    return CertificateInfo(
        index,
        info.subject,
        info.issuer,
        info.serial,
        info.sha256,
        info.not_before,
        info.not_after,
        days,
        info.key,
        info.signature_algorithm,
        info.signature_hash,
        info.sans,
        info.is_ca,
        info.self_signed,
    )


def as_bundle(
    source: Bundle | bytes | str | os.PathLike[str], options: InspectOptions | None = None
) -> Bundle:
    """A Bundle from a Bundle, PEM/DER bytes, PEM text, or a file path."""
    opts = options or InspectOptions()
    if isinstance(source, Bundle):
        return source
    if isinstance(source, bytes):
        return load_bundle(source, password=opts.password)
    if isinstance(source, str) and "-----BEGIN" in source:
        return load_bundle(source, password=opts.password)
    return load_file(Path(source), password=opts.password, max_size=opts.max_size)


def inspect(
    source: Bundle | bytes | str | os.PathLike[str],
    *,
    now: dt.datetime | None = None,
    host: str | None = None,
    keys: Sequence[PrivateKeyTypes] = (),
    options: InspectOptions | None = None,
    store: TrustStore | None = None,
    expiring_days: int | None = None,
    rules: Collection[str] | None = None,
) -> Report:
    """Inspect one bundle: facts per certificate, the chain, and findings.

    ``source`` is an already-loaded :class:`Bundle` (e.g. from a TLS
    handshake), bytes, PEM text or a path. ``host`` turns on
    ``hostname-mismatch``; ``keys`` (plus keys found in the bundle) turn on
    ``key-mismatch``. ``expiring_days`` and ``rules`` override ``options``.
    Raises InspectorError when nothing can be read from ``source``.
    """
    opts = options or InspectOptions()
    if expiring_days is not None or rules is not None:
        opts = InspectOptions(
            expiring_days=opts.expiring_days if expiring_days is None else expiring_days,
            rules=opts.rules if rules is None else frozenset(rules),
            trust_store=opts.trust_store,
            distrust=opts.distrust,
            max_size=opts.max_size,
            password=opts.password,
        )
    when = utc_now(now)
    bundle = as_bundle(source, opts)
    trust = store if store is not None else trust_store_for(opts.trust_store)
    with quiet():
        # Certificates that break RFC 5280 (negative serials...) warn on every
        # read of the field; an audit reports on them, it does not print.
        all_keys = tuple(bundle.keys) + tuple(keys)
        try:
            certs = bundle.certificates
            ders = [bundle.der(i) for i in range(len(certs))]
            facts = [_facts(c, i, ders[i]) for i, c in enumerate(certs)]
            # Leaf signatures feed only bad-signature (and the choice between
            # same-name issuers, which analyze_chain still makes by signature).
            check = opts.rules is None or "bad-signature" in opts.rules
            chain = analyze_chain(certs, store=trust, facts=facts, check_leaf_signatures=check)
            infos = tuple(
                certificate_info(c, i, when, facts[i], ders[i]) for i, c in enumerate(certs)
            )
            ctx = RuleContext(
                bundle=bundle,
                infos=infos,
                chain=chain,
                now=when,
                expiring_days=opts.expiring_days,
                host=host,
                keys=all_keys,
                distrust=opts.distrust,
                facts=facts,
            )
            findings = run_rules(ctx, opts.rules)
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
            # cryptography parses names and extensions lazily; a certificate
            # whose DER is broken there fails only when they are read (a name
            # attribute of a type its Name refuses is a TypeError). One
            # clear error for this bundle, never an exception out of a scan.
            raise InspectorError(
                f"{bundle.source}: malformed certificate: {exc}",
                code="malformed-certificate",
                source=bundle.source,
            ) from exc
    return Report(
        source=bundle.source,
        format=bundle.format,
        certificates=infos,
        chain=chain,
        findings=tuple(findings),
        host=host,
        keys=len(all_keys),
    )
