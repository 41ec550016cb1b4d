"""Bytes -> :class:`Bundle`: PEM, DER, PKCS#7 and PKCS#12, certificates and keys.

A *bundle* is what one source holds: certificates in the order they were
found (the "as received" order, which the chain analysis judges), any private
keys found next to them, and the problems met while reading (a block that
could not be parsed next to ones that could). A source from which no
certificate at all can be read is an error (:class:`InspectorError` with a
stable ``code``), not an empty bundle.

Parsing is cryptography's (Rust) work; this module only finds the pieces.
Certificates that sit *after* the first one in a PEM bundle are usually
intermediates shared by thousands of bundles, so their parsed objects are
memoised per process (keyed by the exact PEM block bytes): scanning a fleet
then parses each intermediate once, not once per customer.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import re
import stat
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from certman.errors import InspectorError

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
"""Files larger than this (bytes) are refused: a certificate bundle is a few KiB."""

# BEGIN and END lines, found in one linear pass. (A single regex for a whole
# block, BEGIN (.*?) END \1, rescans to the end of the input for every BEGIN
# without its END: hostile input of 100 KB of BEGIN lines took seconds, the
# 10 MB cap hours.)
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 #]{1,64})-----")
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"}
_ENCRYPTED_KEY_LABELS = {b"ENCRYPTED PRIVATE KEY"}

# Parsed intermediates, keyed by their PEM block (or DER) bytes. Bounded and
# small, like every per-process cache of the inspector: a fleet has few
# intermediates, and leaves that slip in (bundles in the wrong order) only
# cause a cheap wholesale clear now and then, so memory stays flat.
_PARSE_CACHE: dict[bytes, x509.Certificate] = {}
_PARSE_CACHE_MAX = 512
# The same for the all-certificates PEM fast path, with each one's DER.
_PEM_CACHE: dict[bytes, tuple[x509.Certificate, bytes]] = {}


@dataclass(frozen=True)
class Bundle:
    """The certificates and keys read from one source.

    ``certificates`` keep the order in which they appeared ("as received");
    ``problems`` lists pieces that could not be read although others could
    (they become ``parse-error`` findings); ``format`` is ``pem``, ``der``,
    ``pkcs7`` or ``pkcs12``.
    """

    source: str
    certificates: tuple[x509.Certificate, ...]
    keys: tuple[PrivateKeyTypes, ...] = ()
    format: str = "pem"
    problems: tuple[str, ...] = field(default=())
    known_der: tuple[tuple[x509.Certificate, bytes], ...] = field(
        default=(), repr=False, compare=False
    )
    """(certificate, its DER) pairs the loader already had in hand.

    Saves re-encoding (cryptography builds ``tbs_certificate_bytes`` and the
    fingerprint anew on every access). Matched by identity in :meth:`der`,
    so a bundle ``replace``d with other certificates just misses.
    """

    @property
    def leaf(self) -> x509.Certificate:
        """The first certificate as received (not necessarily the end entity)."""
        return self.certificates[0]

    def der(self, index: int) -> bytes | None:
        """The DER of certificate ``index`` if the loader kept it, else None."""
        if index < len(self.known_der):
            cert, der = self.known_der[index]
            if cert is self.certificates[index]:
                return der
        return None


class _Quiet:
    """Warnings filters for reading odd-but-readable input, once for a whole batch.

    Certificates with RFC 5280 violations (negative serials...) load and
    are read with a CryptographyDeprecationWarning; PKCS#7/#12 that is BER
    rather than DER is read with a UserWarning. An auditor wants them read,
    and the library does not print. ``warnings.catch_warnings`` plus the
    filters costs microseconds, so a scan worker enters this once per chunk
    and the calls inside it (load_bundle, inspect) skip their own.
    Like ``catch_warnings`` itself, not thread-safe (filters are global).
    """

    def __init__(self) -> None:
        self._saved: warnings.catch_warnings[None] | None = None

    def __enter__(self) -> None:
        self._saved = warnings.catch_warnings()
        self._saved.__enter__()
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        warnings.filterwarnings("ignore", ".*could not be parsed as DER", UserWarning)
        _QUIET.depth = 1

    def __exit__(self, *exc: object) -> None:
        _QUIET.depth = 0
        if self._saved is not None:
            self._saved.__exit__(None, None, None)
            self._saved = None


# Per thread: whether this thread is inside quiet() already (threads of an
# endpoint scan each enter their own, as they did with catch_warnings).
_QUIET = threading.local()
_ALREADY_QUIET = contextlib.nullcontext()


def quiet() -> contextlib.AbstractContextManager[None]:
    """A context in which cryptography's warnings about odd input are not shown."""
    return _ALREADY_QUIET if getattr(_QUIET, "depth", 0) else _Quiet()


def load_bundle(
    data: bytes | str,
    *,
    source: str = "<bytes>",
    password: bytes | None = None,
) -> Bundle:
    """Read every certificate and private key from ``data`` (any supported format).

    Raises :class:`InspectorError` with code ``empty-input``, ``truncated-pem``,
    ``pkcs12-password``, ``no-certificate`` or ``unrecognised-input`` when no
    certificate can be read.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if not data.strip():
        raise InspectorError(f"{source}: empty input", code="empty-input", source=source)
    with quiet():
        if b"-----BEGIN " in data:
            return _load_pem(data, source, password)
        return _load_binary(data, source, password)


def load_ders(ders: Sequence[bytes], *, source: str = "<der>") -> Bundle:
    """A bundle from already-split DER certificates (e.g. a TLS handshake's chain)."""
    certs: list[x509.Certificate] = []
    problems: list[str] = []
    with quiet():
        for i, der in enumerate(ders):
            try:
                certs.append(_cached_der(der) if i else _load_der(der))
            except ValueError as exc:
                problems.append(f"certificate #{i}: {exc}")
    if not certs:
        raise InspectorError(
            f"{source}: no readable certificate", code="no-certificate", source=source
        )
    return Bundle(source=source, certificates=tuple(certs), format="der", problems=tuple(problems))


def load_file(
    path: str | os.PathLike[str],
    *,
    password: bytes | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Bundle:
    """Read a bundle from a file, refusing files over ``max_size`` bytes.

    Raises :class:`InspectorError` (``file-unreadable``, ``file-too-large``,
    or any code of :func:`load_bundle`).
    """
    return load_bundle(read_file(path, max_size=max_size), source=str(path), password=password)


def read_file(path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The bytes of ``path``, or InspectorError (``file-unreadable``/``file-too-large``)."""
    try:
        # Plain descriptors: a scan reads one small file per source, and a
        # file object costs more than the read (it also runs its own fstat).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # read(n) allocates n bytes up front: asking for the cap (10 MiB)
            # costs more than reading a certificate. Ask for the size fstat
            # gives (+1 to see growth), then for the rest up to the cap only
            # if there is more (a growing file, a pipe, /proc reporting 0).
            st = os.fstat(fd)
            data = _read_capped(fd, st.st_size if stat.S_ISREG(st.st_mode) else 0, max_size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InspectorError(
            f"{path}: cannot read: {exc.strerror or exc}", code="file-unreadable", source=str(path)
        ) from exc
    if len(data) > max_size:
        raise InspectorError(
            f"{path}: larger than the {max_size}-byte limit",
            code="file-too-large",
            source=str(path),
        )
    return data


def _read_capped(fd: int, size: int, max_size: int) -> bytes:
    """Up to ``max_size + 1`` bytes of the file ``fd`` whose fstat size is ``size``.

    ``size`` is 0 when unknown (not a regular file). A regular file's short
    read is its end; anything else is read in 64 KiB pieces to the cap.
    """
    want = min(size, max_size) + 1 if size else 65536
    parts: list[bytes] = []
    total = 0
    while total <= max_size:
        chunk = os.read(fd, min(want, max_size + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if size and len(chunk) < want:
            break  # a regular file: a short read is the end
        want = 65536
    return parts[0] if len(parts) == 1 else b"".join(parts)


def load_private_key(data: bytes, *, password: bytes | None = None) -> PrivateKeyTypes:
    """One private key from PEM or DER bytes (for ``--key``)."""
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password)
        return serialization.load_der_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The message of cryptography never contains key material.
        raise InspectorError(f"cannot read private key: {exc}", code="bad-key") from exc


def _checked(cert: x509.Certificate) -> x509.Certificate:
    """``cert``, once the parts cryptography parses lazily are known to parse.

    ``load_der_x509_certificate`` accepts a certificate whose names or
    extensions are malformed and raises ``ValueError`` only when they are
    first read; reading them here makes such a certificate a parse problem of
    its block (ValueError) instead of an exception escaping ``inspect``.
    """
    try:
        cert.subject  # noqa: B018 - parsed for the side effect of validating it
        cert.issuer  # noqa: B018
        cert.extensions  # noqa: B018
    except (x509.DuplicateExtension, TypeError) as exc:
        # Neither is a ValueError: a repeated extension, or a name attribute
        # whose ASN.1 type cryptography's Name refuses (TypeError).
        raise ValueError(str(exc)) from exc
    return cert


def _load_der(der: bytes) -> x509.Certificate:
    try:
        return _checked(x509.load_der_x509_certificate(der))
    except x509.InvalidVersion as exc:  # not a ValueError; one more parse problem here
        raise ValueError(str(exc)) from exc


def _cached_der(der: bytes) -> x509.Certificate:
    cert = _PARSE_CACHE.get(der)
    if cert is None:
        cert = _load_der(der)
        if len(_PARSE_CACHE) >= _PARSE_CACHE_MAX:
            _PARSE_CACHE.clear()
        _PARSE_CACHE[der] = cert
    return cert


def _der_prefix(der: bytes) -> bytes:
    """The first DER element of ``der`` (a TRUSTED CERTIFICATE carries trailing aux data)."""
    if len(der) < 2 or der[0] != 0x30:
        return der
    first = der[1]
    if first < 0x80:
        return der[: 2 + first]
    n = first & 0x7F
    length = int.from_bytes(der[2 : 2 + n], "big")
    return der[: 2 + n + length]


def _pem_blocks(data: bytes) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
    """``(label, body, whole block)`` of each complete PEM block, and the BEGIN count.

    A BEGIN line is closed by the next marker if that is the END line of the
    same label; a BEGIN followed by another BEGIN is an unterminated block (so
    a truncated block does not swallow the complete one after it).
    """
    blocks: list[tuple[bytes, bytes, bytes]] = []
    begins = 0
    open_: re.Match[bytes] | None = None
    for marker in _PEM_MARKER.finditer(data):
        if marker.group(1) == b"BEGIN":
            begins += 1
            open_ = marker
        elif open_ is not None and marker.group(2) == open_.group(2):
            blocks.append(
                (
                    open_.group(2),
                    data[open_.end() : marker.start()],
                    data[open_.start() : marker.end()],
                )
            )
            open_ = None
    return blocks, begins


def _load_pem(data: bytes, source: str, password: bytes | None) -> Bundle:
    # Fast path, the common case of a fleet: only CERTIFICATE blocks, all
    # complete. cryptography's Rust PEM reader does it in one call; anything
    # else (keys, PKCS#7, damage) takes the block-by-block path below, which
    # can say what was wrong where.
    begins = data.count(b"-----BEGIN ")
    if (
        begins
        and data.count(b"-----BEGIN CERTIFICATE-----") == begins
        and data.count(b"-----END CERTIFICATE-----") == begins
    ):
        bundle = _load_cert_pems(data, source, begins)
        if bundle is not None:
            return bundle
    return _load_pem_blocks(data, source, password)


_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
_END_CERT = b"-----END CERTIFICATE-----"


def _load_cert_pems(data: bytes, source: str, begins: int) -> Bundle | None:
    """Only complete CERTIFICATE blocks: each decoded once, intermediates shared.

    Instead of cryptography's one-call PEM reader (which parses every block
    anew), the blocks are split here so that a block seen before (an
    intermediate shared by thousands of bundles) is the *same* parsed object
    every time: the inspector's per-process caches then find it by
    identity. None (the caller takes the careful block-by-block path) on
    anything unexpected.
    """
    certs: list[x509.Certificate] = []
    known: list[tuple[x509.Certificate, bytes]] = []
    pos = 0
    try:
        for _ in range(begins):
            start = data.index(_BEGIN_CERT, pos) + len(_BEGIN_CERT)
            end = data.index(_END_CERT, start)
            pos = end + len(_END_CERT)
            body = data[start:end]
            if b"-----" in body:  # markers out of order: the careful path says where
                return None
            hit = _PEM_CACHE.get(body)
            if hit is None and not certs:
                # The first block: usually the leaf, unique, so not cached
                # (but a bundle in the wrong order starts with a shared
                # intermediate, found above). Unchecked, like
                # cryptography's PEM reader: lazily parsed fields that are
                # broken fail later, in inspect().
                der = binascii.a2b_base64(body)
                cert = x509.load_der_x509_certificate(der)
                certs.append(cert)
                known.append((cert, der))
                continue
            if hit is None:
                der = binascii.a2b_base64(body)
                hit = (x509.load_der_x509_certificate(der), der)
                # Only CA certificates recur (a leaf after its intermediates
                # is unique), and a broken one is not shared (it fails in
                # inspect()): neither is cached, so the cache keeps the few
                # shared objects instead of churning.
                if _is_sound_ca(hit[0]):
                    if len(_PEM_CACHE) >= _PARSE_CACHE_MAX:
                        _PEM_CACHE.clear()
                    _PEM_CACHE[body] = hit
            certs.append(hit[0])
            known.append(hit)
    except (ValueError, binascii.Error, x509.InvalidVersion):
        return None
    return Bundle(source, tuple(certs), known_der=tuple(known))


def _is_sound_ca(cert: x509.Certificate) -> bool:
    try:
        _checked(cert)
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (ValueError, x509.ExtensionNotFound):
        return False


def _load_pem_blocks(data: bytes, source: str, password: bytes | None) -> Bundle:
    certs: list[x509.Certificate] = []
    keys: list[PrivateKeyTypes] = []
    problems: list[str] = []
    fmt = "pem"
    found, begins = _pem_blocks(data)
    blocks = 0
    for label, body, whole in found:
        blocks += 1
        try:
            if label in _CERT_LABELS:
                if certs:
                    cert = _PARSE_CACHE.get(body)
                    if cert is None:
                        cert = _load_der(_decode(body, label))
                        if len(_PARSE_CACHE) >= _PARSE_CACHE_MAX:
                            _PARSE_CACHE.clear()
                        _PARSE_CACHE[body] = cert
                else:
                    cert = _load_der(_decode(body, label))
                certs.append(cert)
            elif label in _PKCS7_LABELS:
                p7 = pkcs7.load_der_pkcs7_certificates(_decode(body, label))
                certs.extend([_checked(c) for c in p7])
                fmt = "pkcs7"
            elif label in _KEY_LABELS or label in _ENCRYPTED_KEY_LABELS:
                try:
                    keys.append(serialization.load_pem_private_key(whole, password))
                except TypeError:
                    problems.append("an encrypted private key (no password given) was skipped")
            # Other blocks (CSRs, parameters, ...) are not ours to judge.
        except (ValueError, binascii.Error, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            problems.append(f"block #{blocks} ({label.decode()}): {exc}")
    if begins > blocks:
        if not certs:
            raise InspectorError(
                f"{source}: truncated PEM (a BEGIN line without its END line)",
                code="truncated-pem",
                source=source,
            )
        problems.append("truncated PEM: a BEGIN line without its END line")
    if not certs:
        if problems and blocks:
            raise InspectorError(
                f"{source}: no readable certificate ({problems[0]})",
                code="no-certificate",
                source=source,
            )
        raise InspectorError(
            f"{source}: no certificate found (only {'keys' if keys else 'other PEM blocks'})",
            code="no-certificate",
            source=source,
        )
    return Bundle(source, tuple(certs), tuple(keys), fmt, tuple(problems))


def _decode(body: bytes, label: bytes) -> bytes:
    der = binascii.a2b_base64(body)
    if label == b"TRUSTED CERTIFICATE":
        der = _der_prefix(der)
    return der


def _looks_like_pkcs12(data: bytes) -> bool:
    # PFX ::= SEQUENCE { version INTEGER (3), ... }: after the outer SEQUENCE
    # header comes 02 01 03. Telling PKCS#12 apart up front is what lets a
    # failed decryption be reported as a wrong password, not as garbage.
    if len(data) < 8 or data[0] != 0x30:
        return False
    n = data[1] & 0x7F if data[1] & 0x80 else 0
    return data[2 + n : 5 + n] == b"\x02\x01\x03"


def _load_binary(data: bytes, source: str, password: bytes | None) -> Bundle:
    if data[:1] == b"\x30":
        try:
            cert = _load_der(data)
            return Bundle(source, (cert,), format="der", known_der=((cert, data),))
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
            pass
        if _looks_like_pkcs12(data):
            return _load_pkcs12(data, source, password)
        try:
            p7 = [_checked(c) for c in pkcs7.load_der_pkcs7_certificates(data)]
        except (
            ValueError,
            UnsupportedAlgorithm,
            x509.InvalidVersion,
        ):  # e.g. PKCS#7 that is not signedData
            p7 = []
        if p7:
            return Bundle(source, tuple(p7), format="pkcs7")
        try:
            serialization.load_der_private_key(data, password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
        else:
            raise InspectorError(
                f"{source}: a private key but no certificate", code="no-certificate", source=source
            )
    raise InspectorError(
        f"{source}: not a certificate (PEM, DER, PKCS#7 or PKCS#12)",
        code="unrecognised-input",
        source=source,
    )


def _load_pkcs12(data: bytes, source: str, password: bytes | None) -> Bundle:
    attempts = [password] if password is not None else [None, b""]
    for attempt in attempts:
        try:
            p12 = pkcs12.load_pkcs12(data, attempt)
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
            continue
        certs: list[x509.Certificate] = []
        problems: list[str] = []
        for entry in ([p12.cert] if p12.cert is not None else []) + list(p12.additional_certs):
            try:
                certs.append(_checked(entry.certificate))
            except ValueError as exc:
                problems.append(f"certificate #{len(certs) + len(problems)}: {exc}")
        if not certs:
            raise InspectorError(
                f"{source}: PKCS#12 without certificates", code="no-certificate", source=source
            )
        keys = (p12.key,) if p12.key is not None else ()
        return Bundle(source, tuple(certs), keys, "pkcs12", tuple(problems))
    hint = "wrong password" if password is not None else "a password is needed (--password)"
    raise InspectorError(
        f"{source}: cannot decrypt PKCS#12: {hint}", code="pkcs12-password", source=source
    )
