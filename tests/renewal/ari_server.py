"""The renewalInfo stub for these tests: :class:`certman.testing.AriServer`, plus
an RFC 9773 §4.1 certificate id written separately from certman's, so that
tests keyed by ``stub_cert_id`` do not check certman against itself."""

from __future__ import annotations

import base64

from cryptography import x509

from certman.testing import AriAnswer as Answer
from certman.testing import AriRequest as Recorded
from certman.testing import AriServer

__all__ = ["Answer", "AriServer", "Recorded", "stub_cert_id"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def stub_cert_id(cert: x509.Certificate) -> str:
    """base64url(AKI keyIdentifier) "." base64url(DER INTEGER content of the serial)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    if raw[0] & 0x80:  # DER INTEGER of a positive number: keep the sign bit clear
        raw = b"\x00" + raw
    return f"{_b64(aki.key_identifier)}.{_b64(raw)}"
