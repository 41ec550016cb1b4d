"""``inspect()``: one bundle in, one frozen :class:`Report` out.

This is where loading, the chain analysis and the rules meet. It is pure
apart from per-process caches (parsed intermediates, their facts, signature
results, trust stores), which only make repeated work cheaper.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

from certman.errors import ConfigError, InspectorError
from certman.inspector.chain import TrustStore, analyze_chain, default_trust_store, fingerprint
from certman.inspector.der import QuickFacts, quick_facts
from certman.inspector.distrust import EVENTS, DistrustEvent
from certman.inspector.load import DEFAULT_MAX_SIZE, Bundle, load_bundle, load_file
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
    if isinstance(pub, rsa.RSAPublicKey):
        return KeyInfo("RSA", pub.key_size)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return KeyInfo("EC", pub.curve.key_size, curve_name(pub.curve))
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return KeyInfo("Ed25519", 256)
    if isinstance(pub, ed448.Ed448PublicKey):
        return KeyInfo("Ed448", 456)
    if isinstance(pub, dsa.DSAPublicKey):
        return KeyInfo("DSA", pub.key_size)
    return KeyInfo(type(pub).__name__, 0)


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


def _key(cert: x509.Certificate) -> KeyInfo:
    try:
        return key_info(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return KeyInfo("unknown", 0)


_INFO_CACHE: dict[x509.Certificate, CertificateInfo] = {}
_NAME_TEXT: dict[bytes, str] = {}
_FACTS: dict[x509.Certificate, QuickFacts | None] = {}


def _facts(cert: x509.Certificate, index: int) -> QuickFacts | None:
    # Memoised for intermediates (index > 0), which recur across a fleet.
    if not index:
        return quick_facts(cert)
    if cert in _FACTS:
        return _FACTS[cert]
    if len(_FACTS) > 512:
        _FACTS.clear()
    facts = _FACTS[cert] = quick_facts(cert)
    return facts


def _remember(der: bytes, name: x509.Name) -> str:
    """RFC 4514 text of an issuer name, memoised by its DER (leaves share issuers)."""
    if len(_NAME_TEXT) > 512:
        _NAME_TEXT.clear()
    text = _NAME_TEXT[der] = name.rfc4514_string()
    return text


def certificate_info(
    cert: x509.Certificate, index: int, now: dt.datetime, facts: QuickFacts | None = None
) -> CertificateInfo:
    """The facts about one certificate (memoised per process for intermediates).

    ``facts`` (from :func:`quick_facts`) saves building name and extension
    objects; without it cryptography's parser is used.
    """
    cached = _INFO_CACHE.get(cert) if index else None
    if cached is not None:
        days = (cached.not_after - now) // dt.timedelta(days=1)
        return _with(cached, index, days)
    algorithm, digest = _signature(cert)
    not_after = cert.not_valid_after_utc
    if facts is not None:
        issuer_text = _NAME_TEXT.get(facts.issuer) or _remember(facts.issuer, cert.issuer)
        sans, is_ca, self_signed = facts.sans, facts.is_ca, facts.issuer == facts.subject
    else:
        issuer_text = cert.issuer.rfc4514_string()
        sans, is_ca, self_signed = _sans(cert), _is_ca(cert), cert.subject == cert.issuer
    info = CertificateInfo(
        index=index,
        subject=cert.subject.rfc4514_string(),
        issuer=issuer_text,
        serial=format(cert.serial_number, "X"),
        sha256=fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        days_left=(not_after - now) // dt.timedelta(days=1),
        key=_key(cert),
        signature_algorithm=algorithm,
        signature_hash=digest,
        sans=sans,
        is_ca=is_ca,
        self_signed=self_signed,
    )
    if index:
        if len(_INFO_CACHE) > 512:
            _INFO_CACHE.clear()
        _INFO_CACHE[cert] = info
    return info


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
    with warnings.catch_warnings():
        # Certificates that break RFC 5280 (negative serials...) warn on every
        # read of the field; an audit reports on them, it does not print (as
        # in load.py).
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        all_keys = tuple(bundle.keys) + tuple(keys)
        try:
            facts = [_facts(c, i) for i, c in enumerate(bundle.certificates)]
            chain = analyze_chain(bundle.certificates, store=trust, facts=facts)
            infos = tuple(
                certificate_info(c, i, when, facts[i]) for i, c in enumerate(bundle.certificates)
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
