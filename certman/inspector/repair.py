"""Chain repair: put a bundle in the order a server should send it.

Given the certificates someone deployed (in any order, with roots and strays
mixed in) and, optionally, intermediates fetched from AIA URLs, produce what
nginx and friends want: the leaf, then each issuer in turn, *without* the root
(clients already have it; sending it wastes bytes on every handshake and some
validators choke on it).

Pure: no network, no clock (``now`` is a parameter), no files. Fetching lives
in :mod:`certman.inspector.aia`; the CLI (``certman inspect FILE --fix -o
fixed.pem``) wires the two together.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certman.errors import InspectorError

log = logging.getLogger(__name__)

#: Longer paths than this are treated as loops/garbage (real ones are 2-4 long).
MAX_PATH = 10


def issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key made ``child``'s signature.

    Uses cryptography's ``verify_directly_issued_by`` (name match plus
    signature); any failure (wrong name, bad signature, a key type it cannot
    check) is simply "no".
    """
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and issued_by(cert, cert)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        # v1 certificates: a self-signed one is a root, anything else a leaf.
        return cert.issuer == cert.subject
    return bc.ca


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _spki(key_or_cert: x509.Certificate | PrivateKeyTypes) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def matching_key(
    certs: Sequence[x509.Certificate], keys: Iterable[PrivateKeyTypes]
) -> PrivateKeyTypes | None:
    """The first of ``keys`` whose public key is that of one of ``certs``, else None."""
    spkis = {_spki(c) for c in certs}
    return next((k for k in keys if _spki(k) in spkis), None)


def describe(cert: x509.Certificate) -> str:
    """A short human name: the subject CN, else the whole subject."""
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if cns:
        value = cns[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.subject.rfc4514_string() or "(empty subject)"


def _valid_at(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _dedupe(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        der = _der(cert)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return out


@dataclass(frozen=True)
class ChainPath:
    """The best issuance path found from a bundle's leaf upwards.

    ``path`` starts with the leaf; ``root`` is set when the path ends in a
    self-signed certificate (which is then the last element of ``path``);
    ``anchor`` when the top's issuer is a trust-store certificate (not part
    of ``path``). ``complete`` is true in either case: nothing is missing.
    """

    path: tuple[x509.Certificate, ...]
    root: x509.Certificate | None
    anchor: x509.Certificate | None

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def top(self) -> x509.Certificate:
        return self.path[-1]

    @property
    def complete(self) -> bool:
        return self.root is not None or self.anchor is not None


def _leaf_candidates(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    def issues_something(cert: x509.Certificate) -> bool:
        return any(other is not cert and issued_by(other, cert) for other in certs)

    bottoms = [c for c in certs if not issues_something(c)]
    return [c for c in bottoms if not _is_ca(c)] or bottoms or [certs[0]]


def _walk(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
) -> ChainPath:
    path = [leaf]
    used = {_der(leaf)}
    root: x509.Certificate | None = None
    anchor: x509.Certificate | None = None
    current = leaf
    while len(path) < MAX_PATH:
        if is_self_signed(current):
            root = current
            break
        candidates = [c for c in pool if _der(c) not in used and issued_by(current, c)]
        candidates.sort(key=lambda c: (_valid_at(c, now), c.not_valid_after_utc), reverse=True)
        trusted = next(
            (a for a in anchors if a.subject == current.issuer and issued_by(current, a)), None
        )
        if candidates and (trusted is None or _valid_at(candidates[0], now)):
            current = candidates[0]
            path.append(current)
            used.add(_der(current))
            continue
        anchor = trusted
        break
    return ChainPath(path=tuple(path), root=root, anchor=anchor)


def build_path(
    certs: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate] = (),
    key: PrivateKeyTypes | None = None,
) -> ChainPath:
    """Find the leaf and walk from it up through ``certs`` (any order) as far as it goes.

    The leaf: with a private key, the certificate that matches it; otherwise,
    among the certificates that issued nothing else in the bundle (non-CA
    ones first), the one with the longest path, the first given on a tie --
    a stray certificate pasted into the file is the one that leads nowhere.

    At each step the issuer is a certificate whose name *and* signature match.
    When several do (a renewed intermediate next to its expired predecessor,
    or a cross-signed twin), one valid at ``now`` wins, then the one expiring
    last. A trust-store ``anchor`` that issued the current top ends the walk
    unless the bundle has a currently valid issuer of its own (the deployer's
    choice of cross-sign is kept).

    Raises :class:`InspectorError` (``repair-no-certificate``,
    ``repair-key-mismatch``).
    """
    pool = _dedupe(certs)
    if not pool:
        raise InspectorError("no certificate to repair", code="repair-no-certificate")
    if key is not None:
        want = _spki(key)
        match = next((c for c in pool if _spki(c) == want), None)
        if match is None:
            raise InspectorError(
                "no certificate in the bundle matches the private key", code="repair-key-mismatch"
            )
        return _walk(match, pool, now=now, anchors=anchors)
    best: ChainPath | None = None
    for candidate in _leaf_candidates(pool):
        path = _walk(candidate, pool, now=now, anchors=anchors)
        if best is None or (path.complete, len(path.path)) > (best.complete, len(best.path)):
            best = path
    assert best is not None
    return best


def pick_leaf(
    certs: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    key: PrivateKeyTypes | None = None,
    anchors: Sequence[x509.Certificate] = (),
) -> x509.Certificate:
    """The end-entity certificate of a bundle, whatever the order (see :func:`build_path`)."""
    return build_path(certs, now=now, anchors=anchors, key=key).leaf


@dataclass(frozen=True)
class RepairedChain:
    """A bundle put right: ``leaf`` then ``intermediates`` (issuer order), no root.

    ``complete`` says whether the path reaches a self-signed root or a trust
    anchor; when it is false the top's issuer is missing and the output is
    *not* fit to deploy (``missing_issuer`` names what to look for).
    ``dropped`` lists what was left out (the root, duplicates' twins,
    unrelated certificates), ``fetched`` the intermediates that came from
    outside the bundle, and ``changes`` says in words what differs from the
    input.
    """

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate | None
    anchor: x509.Certificate | None
    dropped: tuple[x509.Certificate, ...]
    fetched: tuple[x509.Certificate, ...]
    complete: bool
    changes: tuple[str, ...]

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """What to deploy: the leaf, then the intermediates."""
        return (self.leaf, *self.intermediates)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def missing_issuer(self) -> str | None:
        """The issuer name (RFC 4514) of the top certificate when the chain is incomplete."""
        if self.complete:
            return None
        return self.certificates[-1].issuer.rfc4514_string()

    def pem(self) -> bytes:
        """The deployable bundle: leaf first, then intermediates, PEM, no root, no key."""
        return b"".join(c.public_bytes(Encoding.PEM) for c in self.certificates)


def repair_chain(
    received: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    fetched: Sequence[x509.Certificate] = (),
    anchors: Sequence[x509.Certificate] = (),
    key: PrivateKeyTypes | None = None,
) -> RepairedChain:
    """Order ``received`` (+ ``fetched``) as leaf, intermediates; drop the root and strays.

    ``anchors`` (a trust store's certificates) let the walk stop at a
    trusted root that is not in the bundle; the root itself is never written
    out, whether it came in the bundle or from the store. Raises
    :class:`InspectorError` (``repair-no-certificate``,
    ``repair-key-mismatch``) when there is nothing to build on.
    """
    received_list = _dedupe(received)
    fetched_new = [c for c in _dedupe(fetched) if _der(c) not in {_der(r) for r in received_list}]
    chain = build_path([*received_list, *fetched_new], now=now, anchors=anchors, key=key)
    path = list(chain.path)
    root = chain.root
    if root is not None and len(path) > 1:
        path.pop()  # never ship the root
    elif root is not None:
        log.debug("the bundle's leaf %s is self-signed", describe(root))
        root = None  # a lone self-signed leaf: it *is* the deployable certificate
    leaf, intermediates = path[0], tuple(path[1:])
    in_output = {_der(c) for c in path}
    fetched_ders = {_der(c) for c in fetched_new}
    dropped = tuple(c for c in received_list if _der(c) not in in_output)
    used_fetched = tuple(c for c in intermediates if _der(c) in fetched_ders)

    changes: list[str] = []
    received_ders = [_der(c) for c in received]
    kept_in_received_order = [d for d in received_ders if d in in_output]
    output_ders = [_der(c) for c in path]
    if len(set(received_ders)) != len(received_ders):
        changes.append("removed duplicate certificates")
    if [d for d in output_ders if d in set(received_ders)] != list(
        dict.fromkeys(kept_in_received_order)
    ):
        changes.append("put the certificates in issuance order (leaf first)")
    for cert in dropped:
        if root is not None and _der(cert) == _der(root):
            changes.append(f"removed the root {describe(cert)!r} (clients have it already)")
        elif is_self_signed(cert):
            changes.append(f"removed an unrelated root {describe(cert)!r}")
        else:
            changes.append(f"removed {describe(cert)!r}, which is not on the leaf's path")
    for cert in used_fetched:
        changes.append(f"added the missing intermediate {describe(cert)!r} (fetched)")
    return RepairedChain(
        leaf=leaf,
        intermediates=intermediates,
        root=root,
        anchor=chain.anchor,
        dropped=dropped,
        fetched=used_fetched,
        complete=chain.complete,
        changes=tuple(changes),
    )


__all__ = [
    "MAX_PATH",
    "ChainPath",
    "RepairedChain",
    "build_path",
    "describe",
    "is_self_signed",
    "issued_by",
    "matching_key",
    "pick_leaf",
    "repair_chain",
]
