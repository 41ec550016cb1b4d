"""Chain analysis: order, links, signatures and the path to a trust store.

Input is a list of :class:`x509.Certificate` in the order they were received
(a file's order, a TLS handshake's order). Output is a
:class:`ChainAnalysis`: the status of each certificate's link to its issuer,
the path built from the end entity upwards, and where it is anchored.

Why not just ``cryptography.x509.verification``: its verifier answers one
question (does a path to the store exist for this name, now?) and stops at
the first problem. An auditor needs every problem at once, and *which*
certificate has it: a link whose signature does not verify, an intermediate
sent in the wrong place, a missing one, an extra one, a root that was sent
along. It also refuses expired, SHA-1 and other certificates that we must
still walk through to report on. So the path is built here, link by link,
with cryptography's own primitive for each link
(:meth:`x509.Certificate.verify_directly_issued_by`), and
:func:`strict_verify` offers the library verifier's verdict on top.

Memoisation: intermediates and roots recur across a fleet, so signature
results for (child, issuer) pairs where the child is a CA, and the
trust-store anchoring of a path's top CA certificate, are cached per process.
Leaf signatures are unique and checked every time (unless the caller does
not report bad signatures; see :func:`analyze_chain`); the analysis of a
recurring shape (a leaf with the same intermediates) is reused only once
the leaf's own verdict is known. The caches are keyed by object identity
(the loader hands out one parsed object per distinct intermediate; see
load.py): hashing a Certificate hashes its whole DER, which cost more than
the work saved. Each entry holds its certificate, so an id is never reused
while its entry lives.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import os
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification

from certman.errors import InspectorError
from certman.inspector.der import QuickFacts, quick_facts

logger = logging.getLogger(__name__)


class LinkStatus(enum.StrEnum):
    """How one certificate relates to its issuer."""

    OK = "ok"
    """The next certificate as received issued it (signature verified)."""
    OUT_OF_ORDER = "out-of-order"
    """Its issuer is in the bundle, but not right after it."""
    BAD_SIGNATURE = "bad-signature"
    """A certificate with its issuer's name is there, but did not sign it."""
    TRUSTED = "trusted"
    """It is in the trust store, or a trust-store root signed it."""
    SELF_SIGNED = "self-signed"
    """A self-signed root that is not in the trust store."""
    ISSUER_MISSING = "issuer-missing"
    """Its issuer is neither in the bundle nor in the trust store."""
    UNCHECKED = "unchecked"
    """Names match but the signature algorithm could not be checked (e.g. MD2)."""


@dataclass(frozen=True)
class Link:
    """The status of certificate ``index`` (as received) towards its issuer.

    ``issuer`` is the bundle index of the certificate that issued it, when
    it is in the bundle; ``detail`` says more in words.
    """

    index: int
    status: LinkStatus
    issuer: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class ChainAnalysis:
    """The chain as received, and the path built from it.

    ``path`` lists bundle indices from the end entity up to the top
    certificate that was sent. ``anchor`` is the subject of the trust-store
    certificate the path reaches (None when it does not). ``complete`` is
    true when the path ends at a self-signed certificate or at the store.
    """

    links: tuple[Link, ...]
    leaf: int
    path: tuple[int, ...]
    trusted: bool
    complete: bool
    anchor: str | None = None
    anchor_sha256: str | None = None
    out_of_order: bool = False
    extra: tuple[int, ...] = ()
    bad_signatures: tuple[int, ...] = ()
    root_included: int | None = None


@dataclass(frozen=True)
class _Anchor:
    status: LinkStatus
    root: x509.Certificate | None = None
    detail: str = ""
    root_subject: str | None = None
    root_sha256: str | None = None


class TrustStore:
    """A set of trusted certificates, indexed by subject and fingerprint.

    Thread safety: lookups only read the index; the per-top-certificate
    cache is a plain dict, safe under the GIL. A certificate that is not
    found is simply not trusted (no exception).
    """

    def __init__(self, certificates: Iterable[x509.Certificate], *, name: str = "custom") -> None:
        self.name = name
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self._members: set[x509.Certificate] = set()
        for cert in certificates:
            self._members.add(cert)
            self._by_subject.setdefault(raw_names(cert)[1], []).append(cert)
        self._anchors: dict[int, tuple[x509.Certificate, _Anchor]] = {}

    def __len__(self) -> int:
        return len(self._members)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Every certificate of a PEM file (raises InspectorError if there is none)."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InspectorError(
                f"trust store {path}: {exc.strerror or exc}", code="trust-store-unreadable"
            ) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                certs = x509.load_pem_x509_certificates(data)
            except ValueError as exc:
                raise InspectorError(
                    f"trust store {path}: no PEM certificates ({exc})", code="trust-store-invalid"
                ) from exc
        return cls(certs, name=str(path))

    def contains(self, cert: x509.Certificate) -> bool:
        """Whether this exact certificate is in the store."""
        return cert in self._members

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Store certificates whose subject is ``cert``'s issuer (maybe several keys)."""
        return self._by_subject.get(raw_names(cert)[0], [])

    def certificates(self) -> list[x509.Certificate]:
        """All certificates in the store."""
        return list(self._members)

    def anchor(
        self,
        top: x509.Certificate,
        *,
        names: tuple[bytes, bytes] | None = None,
        remember: bool = True,
    ) -> _Anchor:
        """How the top certificate of a path reaches this store.

        ``names`` are its (issuer, subject) DER when the caller has them.
        With ``remember`` (for CA certificates, which recur) the answer is
        cached per certificate object.
        """
        hit = self._anchors.get(id(top))
        if hit is not None and hit[0] is top:
            return hit[1]
        result = self._compute_anchor(top, names or raw_names(top))
        if result.root is not None:
            result = _Anchor(
                result.status,
                result.root,
                result.detail,
                result.root.subject.rfc4514_string(),
                fingerprint(result.root),
            )
        if remember:
            if len(self._anchors) > 256:
                self._anchors.clear()
            self._anchors[id(top)] = (top, result)
        return result

    def _compute_anchor(self, top: x509.Certificate, names: tuple[bytes, bytes]) -> _Anchor:
        issuer_der, subject_der = names
        if subject_der in self._by_subject and top in self._members:
            return _Anchor(LinkStatus.TRUSTED, top, "in the trust store")
        candidates = self._by_subject.get(issuer_der, [])
        for root in candidates:
            if _signed_by(top, root) is not False:
                return _Anchor(LinkStatus.TRUSTED, root, f"issued by trusted {_cn(root)}")
        if candidates:
            return _Anchor(
                LinkStatus.BAD_SIGNATURE,
                None,
                f"no trust-store certificate named {_cn(candidates[0])} signed it",
            )
        if issuer_der == subject_der:
            # A re-encoded copy of a trusted root (same name and key) is trusted.
            same = self._by_subject.get(subject_der, [])
            for root in same:
                if root.public_key() == top.public_key():
                    return _Anchor(LinkStatus.TRUSTED, root, "same name and key as a trusted root")
            return _Anchor(LinkStatus.SELF_SIGNED, None, "self-signed, not in the trust store")
        return _Anchor(
            LinkStatus.ISSUER_MISSING,
            None,
            f"issuer {name_text(issuer_der, top)} is neither in the bundle nor trusted",
        )


@functools.cache
def default_trust_store() -> TrustStore:
    """certifi's CA bundle (Mozilla's roots), loaded once per process."""
    return TrustStore.from_pem_file(certifi.where())


# (id(child), id(issuer)) -> (child, issuer, signature verified?). Only CA
# certificates' links are cached.
_SIG_CACHE: dict[tuple[int, int], tuple[x509.Certificate, x509.Certificate, bool | None]] = {}


def _signed_by(
    child: x509.Certificate, issuer: x509.Certificate, facts: QuickFacts | None = None
) -> bool | None:
    """True/False when ``issuer``'s key did/did not sign ``child``; None if uncheckable.

    Calls the key's own ``verify`` with the algorithm named in the
    certificate instead of ``verify_directly_issued_by``: it is about twice
    as fast in a fleet scan (the issuer's parsed key object is reused), and
    still verifies legacy hashes (MD5, SHA-1) that the certificate-level
    helper refuses. Anything unusual (RSA-PSS, unknown keys) goes to
    cryptography's helper. ``facts`` (from :func:`quick_facts_der`) supply
    the TBS bytes and signature that cryptography would re-encode.
    """
    try:
        algorithm = child.signature_hash_algorithm
        pub = public_key_of(issuer)
        oid = child.signature_algorithm_oid
        if facts is not None and facts.signature:
            tbs, signature = facts.tbs, facts.signature
        else:
            tbs, signature = child.tbs_certificate_bytes, child.signature
        if isinstance(pub, ec.EllipticCurvePublicKey) and algorithm is not None:
            pub.verify(signature, tbs, ec.ECDSA(algorithm))
        elif (
            isinstance(pub, rsa.RSAPublicKey)
            and algorithm is not None
            and oid != x509.SignatureAlgorithmOID.RSASSA_PSS
        ):
            pub.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(pub, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            pub.verify(signature, tbs)
        else:
            child.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def signed_by(
    child: x509.Certificate,
    issuer: x509.Certificate,
    *,
    cache: bool = False,
    facts: QuickFacts | None = None,
) -> bool | None:
    """Whether ``issuer`` signed ``child`` (None: algorithm not checkable).

    With ``cache`` the answer is memoised per process for these two
    certificate objects (use it for intermediates, which recur; leaves do
    not). ``facts`` are ``child``'s, when the caller has them.
    """
    if not cache:
        return _signed_by(child, issuer, facts)
    key = (id(child), id(issuer))
    hit = _SIG_CACHE.get(key)
    if hit is not None and hit[0] is child and hit[1] is issuer:
        return hit[2]
    result = _signed_by(child, issuer, facts)
    if len(_SIG_CACHE) > 512:
        _SIG_CACHE.clear()
    _SIG_CACHE[key] = (child, issuer, result)
    return result


_PUBKEYS: dict[int, tuple[x509.Certificate, Any]] = {}
_NAMES: dict[int, tuple[x509.Certificate, tuple[bytes, bytes]]] = {}
_NAME_TEXT: dict[bytes, str] = {}
_LAST_KEY: list[tuple[x509.Certificate, Any] | None] = [None]


def public_key_of(cert: x509.Certificate, *, remember: bool = True) -> Any:
    """``cert.public_key()``, memoised per certificate object (issuers recur).

    Raises what ``public_key()`` raises (ValueError, UnsupportedAlgorithm).
    ``remember=False`` (a leaf) looks in the cache but does not fill it.
    """
    hit = _PUBKEYS.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    last = _LAST_KEY[0]
    if last is not None and last[0] is cert:
        return last[1]
    key = cert.public_key()
    if remember:
        if len(_PUBKEYS) > 256:
            _PUBKEYS.clear()
        _PUBKEYS[id(cert)] = (cert, key)
    else:
        # The bundle being inspected asks for its leaf's key more than once
        # (key facts, weak-key, key-mismatch): one slot is enough.
        _LAST_KEY[0] = (cert, key)
    return key


def raw_names(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(issuer, subject) as DER bytes, memoised for recurring certificates."""
    hit = _NAMES.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    facts = quick_facts(cert)
    if facts is not None:
        names = (facts.issuer, facts.subject)
    else:
        names = (cert.issuer.public_bytes(), cert.subject.public_bytes())
    if len(_NAMES) > 512:
        _NAMES.clear()
    _NAMES[id(cert)] = (cert, names)
    return names


def name_text(issuer_der: bytes, cert: x509.Certificate) -> str:
    """RFC 4514 text of ``cert``'s issuer (whose DER is ``issuer_der``).

    Memoised by the DER: a fleet's leaves share a few issuers, and
    cryptography builds the text anew on each call (tens of microseconds).
    """
    text = _NAME_TEXT.get(issuer_der)
    if text is None:
        if len(_NAME_TEXT) > 512:
            _NAME_TEXT.clear()
        text = _NAME_TEXT[issuer_der] = cert.issuer.rfc4514_string()
    return text


def _ca(cert: x509.Certificate, facts: QuickFacts | None) -> bool:
    return facts.is_ca if facts is not None else _is_ca(cert)


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return bc.ca


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if attrs:
        return str(attrs[0].value)
    return cert.subject.rfc4514_string()


def analyze_chain(
    certs: Sequence[x509.Certificate],
    *,
    store: TrustStore | None = None,
    facts: Sequence[QuickFacts | None] | None = None,
    check_leaf_signatures: bool = True,
) -> ChainAnalysis:
    """Judge a chain given in the order it was received.

    ``store`` defaults to :func:`default_trust_store`. Pure apart from the
    per-process caches; never raises for a bad chain (problems are in the
    result). ``check_leaf_signatures=False`` is for callers that do not
    report bad signatures (``scan --only distrusted-ca``): an end-entity
    certificate's signature is then not verified when a single certificate
    of the bundle carries its issuer's name (there is no choice to make), and
    its link is ``unchecked``. CA certificates' links are always checked,
    and so is every candidate when several share the name (the path must
    go through the one that really issued it).
    """
    if not certs:
        raise InspectorError("no certificates to analyse", code="no-certificate")
    store = store if store is not None else default_trust_store()
    n = len(certs)
    # Names are compared as the DER bytes the certificates carry (what
    # issuers copy verbatim into their certificates' issuer field).
    if facts is None:
        facts = [None] * n
    names = [
        (f.issuer, f.subject) if f is not None else raw_names(c)
        for c, f in zip(certs, facts, strict=True)
    ]
    issuers = [x[0] for x in names]
    subjects = [x[1] for x in names]
    self_issued = [subjects[i] == issuers[i] for i in range(n)]

    # For each certificate, its issuer in the bundle: prefer one whose
    # signature verifies, then the next one as received.
    issuer_of: list[int | None] = [None] * n
    verdict: list[bool | None] = [None] * n
    for i in range(n):
        if self_issued[i]:
            continue
        candidates = [k for k in range(n) if k != i and subjects[k] == issuers[i]]
        if not candidates:
            continue
        candidates.sort(key=lambda k: (k != i + 1, k))
        chosen = candidates[0]
        chosen_ok: bool | None = None
        f = facts[i]
        recurs = f.is_ca if f is not None else i > 0
        if not recurs and not check_leaf_signatures and len(candidates) == 1:
            issuer_of[i] = chosen  # verdict stays None: not checked
            continue
        for k in candidates:
            ok = signed_by(certs[i], certs[k], cache=recurs, facts=f)
            if ok is not False:
                chosen, chosen_ok = k, ok
                break
            chosen_ok = False
        issuer_of[i], verdict[i] = chosen, chosen_ok

    # Everything from here on depends only on the verdicts above, the names,
    # the CA flags and, for CA certificates, on the objects themselves
    # (their trust-store anchoring, their names in link details). A fleet
    # repeats a few shapes (leaf + the same intermediates), so when no leaf
    # needs its own anchoring the result is memoised by that key.
    cas = [_ca(c, f) for c, f in zip(certs, facts, strict=True)]
    issued_something = {j for j in issuer_of if j is not None}
    shape: tuple[object, ...] | None = None
    if all(cas[i] for i in range(n) if issuer_of[i] is None or i in issued_something):
        shape = (
            id(store),
            tuple(id(c) if ca else None for c, ca in zip(certs, cas, strict=True)),
            tuple(issuer_of),
            tuple(verdict),
            tuple(self_issued),
            tuple(cas),
            check_leaf_signatures,
        )
        hit = _SHAPES.get(shape)
        if hit is not None and hit[0]() is store:
            return hit[2]
    result = _assemble(
        certs, store, names, self_issued, issuer_of, verdict, cas, check_leaf_signatures
    )
    if shape is not None:
        if len(_SHAPES) > 512:
            _SHAPES.clear()
        # The entry holds the CA certificates whose ids are in the key, so
        # those ids cannot be reused while it lives; the store only weakly
        # (a caller may make a store per call), checked on every hit.
        keep = tuple(c for c, ca in zip(certs, cas, strict=True) if ca)
        _SHAPES[shape] = (weakref.ref(store), keep, result)
    return result


_SHAPES: dict[
    tuple[object, ...],
    tuple[weakref.ref[TrustStore], tuple[x509.Certificate, ...], ChainAnalysis],
] = {}


def _assemble(
    certs: Sequence[x509.Certificate],
    store: TrustStore,
    names: list[tuple[bytes, bytes]],
    self_issued: list[bool],
    issuer_of: list[int | None],
    verdict: list[bool | None],
    cas: list[bool],
    checked: bool = True,
) -> ChainAnalysis:
    """The rest of :func:`analyze_chain`, from each certificate's chosen issuer."""
    n = len(certs)
    # The end entity: a certificate that issued nothing here; prefer the
    # first as received, then a non-CA one.
    issued_something = {j for j in issuer_of if j is not None}
    unissuing = [i for i in range(n) if i not in issued_something]
    if 0 in unissuing or not unissuing:
        leaf = 0
    else:
        non_ca = [i for i in unissuing if not cas[i]]
        leaf = (non_ca or unissuing)[0]

    path = [leaf]
    seen = {leaf}
    while True:
        up = issuer_of[path[-1]]
        if up is None or up in seen:
            break
        path.append(up)
        seen.add(up)
    top = path[-1]
    anchor = store.anchor(certs[top], names=names[top], remember=cas[top])
    trusted = anchor.status is LinkStatus.TRUSTED
    complete = trusted or self_issued[top]

    links: list[Link] = []
    bad: list[int] = []
    for i in range(n):
        j = issuer_of[i]
        if j is not None:
            if verdict[i] is False:
                status = LinkStatus.BAD_SIGNATURE
                detail = f"#{j} ({_cn(certs[j])}) has the issuer's name but did not sign it"
                bad.append(i)
            elif verdict[i] is None:
                status = LinkStatus.UNCHECKED
                detail = (
                    "signature algorithm not checkable"
                    if checked or cas[i]
                    else "signature not checked (bad-signature is not among the rules)"
                )
            elif j == i + 1:
                status, detail = LinkStatus.OK, f"issued by #{j}"
            else:
                status, detail = LinkStatus.OUT_OF_ORDER, f"issued by #{j}, not by the next one"
            links.append(Link(i, status, j, detail))
            continue
        a = anchor if i == top else store.anchor(certs[i], names=names[i], remember=cas[i])
        if a.status is LinkStatus.BAD_SIGNATURE:
            bad.append(i)
        if a.status is LinkStatus.ISSUER_MISSING and self_issued[i]:
            links.append(Link(i, LinkStatus.SELF_SIGNED, None, "self-signed"))
        else:
            links.append(Link(i, a.status, None, a.detail))

    on_path = set(path)
    extra = tuple(i for i in range(n) if i not in on_path and (complete or not cas[i]))
    expected = list(range(len(path)))
    out_of_order = len(path) > 1 and path != expected
    root_included = top if len(path) > 1 and self_issued[top] else None
    return ChainAnalysis(
        links=tuple(links),
        leaf=leaf,
        path=tuple(path),
        trusted=trusted,
        complete=complete,
        anchor=anchor.root_subject,
        anchor_sha256=anchor.root_sha256,
        out_of_order=out_of_order or leaf != 0,
        extra=extra,
        bad_signatures=tuple(sorted(set(bad))),
        root_included=root_included,
    )


def strict_verify(
    certs: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    store: TrustStore | None = None,
    host: str | None = None,
) -> str | None:
    """The verdict of cryptography's RFC 5280 / CA/B Forum verifier, or None if it accepts.

    This is what a strict modern client would say about the whole chain
    (first problem only). ``certs[0]`` is the end entity, the rest are
    offered as intermediates in any order.
    """
    store = store if store is not None else default_trust_store()
    roots = store.certificates()
    if not roots:
        return "the trust store is empty"
    builder = verification.PolicyBuilder().store(verification.Store(roots))
    builder = builder.time(now)
    try:
        if host is not None:
            subject = _subject_for(host)
            verifier = builder.build_server_verifier(subject)
            verifier.verify(certs[0], list(certs[1:]))
        else:
            builder.build_client_verifier().verify(certs[0], list(certs[1:]))
    except verification.VerificationError as exc:
        return str(exc)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return str(exc)
    return None


def _subject_for(host: str) -> x509.DNSName | x509.IPAddress:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()
