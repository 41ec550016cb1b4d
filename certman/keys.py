"""Private keys and certificate signing requests.

Key types, by their stable names (used in flags, ``meta.json`` and JSON):

- ``ec-p256`` (the default: small, fast, accepted everywhere that matters),
- ``ec-p384``,
- ``rsa-2048``, ``rsa-3072``, ``rsa-4096`` (for clients that cannot do ECDSA).

Private keys are serialized as unencrypted PKCS#8 PEM: whoever writes them
to disk is responsible for 0600 permissions (the stores do that). Nothing
here logs key material.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certman.errors import ConfigError

__all__ = [
    "DEFAULT_KEY_TYPE",
    "KeyType",
    "PrivateKey",
    "build_csr",
    "generate_private_key",
    "key_type_of",
    "load_private_key",
    "private_key_to_pem",
    "public_key_pem",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The private key types certman generates and accepts."""


class KeyType(enum.StrEnum):
    """A supported key type; the value is its stable name."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, value: str | KeyType) -> KeyType:
        """Accept a name like ``"ec-p256"`` (also ``"ecdsa-p256"``, ``"rsa2048"``).

        Raises ``ConfigError`` (``invalid-key-type``) for anything else.
        """
        if isinstance(value, KeyType):
            return value
        norm = value.strip().lower().replace("_", "-").replace("ecdsa", "ec")
        aliases = {
            "ec": "ec-p256",
            "p256": "ec-p256",
            "p-256": "ec-p256",
            "ec-p-256": "ec-p256",
            "p384": "ec-p384",
            "p-384": "ec-p384",
            "ec-p-384": "ec-p384",
            "rsa": "rsa-2048",
            "rsa2048": "rsa-2048",
            "rsa3072": "rsa-3072",
            "rsa4096": "rsa-4096",
        }
        norm = aliases.get(norm, norm)
        try:
            return cls(norm)
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise ConfigError(
                f"unknown key type {value!r} (choose one of {choices})",
                code="invalid-key-type",
            ) from None


DEFAULT_KEY_TYPE = KeyType.EC_P256

_CURVES: dict[KeyType, type[ec.EllipticCurve]] = {
    KeyType.EC_P256: ec.SECP256R1,
    KeyType.EC_P384: ec.SECP384R1,
}
_RSA_BITS: dict[KeyType, int] = {
    KeyType.RSA_2048: 2048,
    KeyType.RSA_3072: 3072,
    KeyType.RSA_4096: 4096,
}


def generate_private_key(key_type: KeyType | str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh private key of ``key_type`` (RSA uses public exponent 65537)."""
    kt = KeyType.parse(key_type)
    if kt in _CURVES:
        return ec.generate_private_key(_CURVES[kt]())
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kt])


def key_type_of(key: PrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> KeyType:
    """The :class:`KeyType` of a private or public key.

    Raises ``ConfigError`` (``unsupported-key``) for curves or sizes certman
    does not support.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        for kt, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return kt
        raise ConfigError(f"unsupported EC curve {key.curve.name}", code="unsupported-key")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        for kt, bits in _RSA_BITS.items():
            if key.key_size == bits:
                return kt
        raise ConfigError(f"unsupported RSA key size {key.key_size}", code="unsupported-key")
    raise ConfigError(f"unsupported key type {type(key).__name__}", code="unsupported-key")


def private_key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM. The caller writes it with mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of a private key's public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes | str, *, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key (PKCS#8, or traditional SEC1/PKCS#1).

    Raises ``ConfigError``: ``key-invalid`` when the bytes are not a key,
    ``unsupported-key`` for a key type certman does not use (e.g. Ed25519,
    P-521, RSA-1024). The error message never contains key bytes.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        # The library message can mention the PEM label but never the key itself.
        raise ConfigError(f"not a usable PEM private key ({exc})", code="key-invalid") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(
            f"unsupported private key type {type(key).__name__}", code="unsupported-key"
        )
    key_type_of(key)  # reject unsupported curves and sizes now, not at the CA
    return key


def build_csr(key: PrivateKey, names: Sequence[str]) -> bytes:
    """A DER-encoded CSR for ``names`` (DNS names, wildcards and IP addresses).

    Every name goes into the subjectAltName extension (IP addresses as
    iPAddress entries). The first DNS name, when 64 characters or shorter,
    is also the subject common name, for old software that still reads it;
    a CSR for IP addresses only has an empty subject.

    Raises ``ConfigError`` (``invalid-name``) for an empty list.
    """
    if not names:
        raise ConfigError("a certificate needs at least one name", code="invalid-name")
    sans: list[x509.GeneralName] = []
    first_dns: str | None = None
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
            if first_dns is None:
                first_dns = name
    attrs = []
    if first_dns is not None and len(first_dns) <= 64:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, first_dns))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
