"""A few facts read straight from a certificate's DER, for speed in fleet scans.

cryptography builds Python objects for every name attribute and extension
when ``cert.subject`` or ``cert.extensions`` is touched (tens of
microseconds per certificate). A scan of 100,000 bundles only needs the raw
issuer/subject names (to link certificates), the DNS/IP SANs, the CA flag
and whether SCTs are embedded, so this module walks the TBS bytes for those.
It is deliberately small and strict: on anything unexpected it returns None
and the caller falls back to cryptography's parser.

:func:`quick_facts_der` walks a whole certificate's DER (which the loader
already has) and also returns the signed TBS bytes and the signature value:
cryptography re-encodes ``tbs_certificate_bytes`` and the fingerprint on
every access (several microseconds each), which a fleet scan pays per leaf.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509

_SAN_OID = bytes.fromhex("0603551d11")
_BC_OID = bytes.fromhex("0603551d13")
_SCT_OID = bytes.fromhex("060a2b06010401d679020402")


@dataclass(frozen=True)
class QuickFacts:
    """Raw names and the few extension facts the scan needs."""

    issuer: bytes
    subject: bytes
    sans: tuple[str, ...]
    is_ca: bool
    has_sct: bool
    tbs: bytes = b""
    """The DER of tbsCertificate (what the issuer signed); empty when not read here."""
    signature: bytes = b""
    """The signature value (the BIT STRING's bytes); empty when not read here."""


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``."""
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")
        start = pos + 2 + n
    end = start + length
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, start, end


def _ext_value(buf: bytes, pos: int) -> int:
    """Where the extnValue OCTET STRING's content starts (after an optional critical flag)."""
    tag, s, e = _tlv(buf, pos)
    if tag == 0x01:  # critical BOOLEAN
        tag, s, e = _tlv(buf, e)
    if tag != 0x04:
        raise ValueError("extnValue is not an OCTET STRING")
    return s


def _general_names(buf: bytes, start: int, end: int) -> list[str]:
    out: list[str] = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(buf, pos)
        if tag == 0x82:  # dNSName [2] IA5String
            out.append(buf[s:e].decode("ascii"))
        elif tag == 0x87:  # iPAddress [7] OCTET STRING
            out.append(str(ipaddress.ip_address(buf[s:e])))
        pos = e
    return out


def quick_facts(cert: x509.Certificate) -> QuickFacts | None:
    """The facts, or None when the DER is not what this walker expects."""
    try:
        tbs = cert.tbs_certificate_bytes
        return _walk(tbs, 0, b"")
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def quick_facts_der(der: bytes) -> QuickFacts | None:
    """The facts of a certificate given as DER, with its TBS bytes and signature.

    None when the DER is not what this walker expects (the caller then
    falls back to :func:`quick_facts` / cryptography).
    """
    try:
        tag, pos, end = _tlv(der, 0)
        if tag != 0x30 or end != len(der):
            return None
        _, _, tbs_end = _tlv(der, pos)
        tbs = der[pos:tbs_end]
        _, _, alg_end = _tlv(der, tbs_end)  # signatureAlgorithm
        tag, s, e = _tlv(der, alg_end)
        if tag != 0x03 or e != end or s >= e or der[s] != 0:
            return None
        return _walk(tbs, 0, der[s + 1 : e])
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _walk(tbs: bytes, start: int, signature: bytes) -> QuickFacts:
    tag, pos, end = _tlv(tbs, start)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    tag, s, e = _tlv(tbs, pos)
    if tag == 0xA0:  # version
        pos = e
        tag, s, e = _tlv(tbs, pos)
    pos = e  # serial
    tag, s, e = _tlv(tbs, pos)  # signature AlgorithmIdentifier
    pos = e
    tag, s, e = _tlv(tbs, pos)  # issuer
    issuer = tbs[pos:e]
    pos = e
    tag, s, e = _tlv(tbs, pos)  # validity
    pos = e
    tag, s, e = _tlv(tbs, pos)  # subject
    subject = tbs[pos:e]
    pos = e
    tag, s, e = _tlv(tbs, pos)  # subjectPublicKeyInfo
    pos = e
    sans: list[str] = []
    is_ca = has_sct = False
    while pos < end:
        tag, s, e = _tlv(tbs, pos)
        if tag == 0xA3:  # extensions [3] EXPLICIT SEQUENCE OF Extension
            _, xs, xe = _tlv(tbs, s)
            while xs < xe:
                _, es, ee = _tlv(tbs, xs)
                # Only three extensions matter: compare the OID's whole TLV
                # in place and parse nothing else (a leaf has ~10).
                if tbs.startswith(_SAN_OID, es):
                    _, gs, ge = _tlv(tbs, _ext_value(tbs, es + len(_SAN_OID)))
                    sans = _general_names(tbs, gs, ge)
                elif tbs.startswith(_BC_OID, es):
                    _, bs, be = _tlv(tbs, _ext_value(tbs, es + len(_BC_OID)))
                    if bs < be:
                        btag, bvs, bve = _tlv(tbs, bs)
                        is_ca = btag == 0x01 and tbs[bvs:bve] != b"\x00"
                elif tbs.startswith(_SCT_OID, es):
                    has_sct = True
                xs = ee
        pos = e
    return QuickFacts(issuer, subject, tuple(sans), is_ca, has_sct, tbs, signature)


# RFC 4514 short names cryptography uses (x509.name._NAMEOID_TO_NAME), by the
# DER of their OID (tag and length included, so a prefix match is exact).
_SHORT_NAMES: dict[bytes, str] = {
    bytes.fromhex("0603550403"): "CN",
    bytes.fromhex("0603550407"): "L",
    bytes.fromhex("0603550408"): "ST",
    bytes.fromhex("060355040a"): "O",
    bytes.fromhex("060355040b"): "OU",
    bytes.fromhex("0603550406"): "C",
    bytes.fromhex("0603550409"): "STREET",
    bytes.fromhex("060a0992268993f22c640119"): "DC",
    bytes.fromhex("060a0992268993f22c640101"): "UID",
}
# Characters that need no RFC 4514 escaping anywhere in a value, and are
# valid in every string type accepted here (PrintableString's set is the
# narrowest: letters, digits, space and '()-./:=?). Anything else, and a
# leading or trailing space, takes cryptography's own formatter.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()-./:=?")
# UTF8String (0x0c) and IA5String (0x16) also carry these plainly ('*' of
# wildcard names); PrintableString (0x13) may not.
_PLAIN_TEXT = _PLAIN | frozenset(b"*@_&!$%[]{}|~")
_STRING_TAGS = {0x0C: _PLAIN_TEXT, 0x13: _PLAIN, 0x16: _PLAIN_TEXT}


def name_text_der(name: bytes) -> str | None:
    """``x509.Name.rfc4514_string()`` of a Name given as DER, for plain names only.

    A leaf's subject is unique, so its text cannot be memoised, and
    cryptography builds an object per attribute to write it. This writes
    the same text straight from the DER when every attribute is single,
    has a short name (CN, O, ...) and a plain ASCII value needing no
    escaping; otherwise None (the caller asks cryptography).
    """
    try:
        tag, pos, end = _tlv(name, 0)
        if tag != 0x30 or end != len(name):
            return None
        parts: list[str] = []
        while pos < end:
            tag, s, rdn_end = _tlv(name, pos)  # RelativeDistinguishedName SET
            if tag != 0x31:
                return None
            tag, a, attr_end = _tlv(name, s)  # AttributeTypeAndValue SEQUENCE
            if tag != 0x30 or attr_end != rdn_end:
                return None  # multi-valued RDN: rare, leave it to cryptography
            _, _, oid_end = _tlv(name, a)
            short = _SHORT_NAMES.get(name[a:oid_end])
            vtag, vs, ve = _tlv(name, oid_end)
            allowed = _STRING_TAGS.get(vtag)
            if short is None or allowed is None or ve != attr_end or vs == ve:
                return None
            value = name[vs:ve]
            if not allowed.issuperset(value) or value[0] == 0x20 or value[-1] == 0x20:
                return None
            parts.append(f"{short}={value.decode('ascii')}")
            pos = rdn_end
    except (ValueError, IndexError):
        return None
    parts.reverse()
    return ",".join(parts)
