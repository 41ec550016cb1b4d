"""The ACME protocol (RFC 8555). The only package that imports ``acme``/``josepy``.

Nothing from ``acme.messages`` leaves this package: callers get frozen
dataclasses (:class:`Directory`, :class:`Account`, :class:`IssuedCertificate`)
and :class:`~certman.errors.AcmeError` carrying the CA's problem type,
detail and identifier.

Thread safety: :class:`Directory` values are immutable and shared freely;
an :class:`AcmeClient` belongs to one thread (make one per worker, they are
cheap).
"""

from certman.client.account import Account, ExternalAccountBinding
from certman.client.client import AcmeClient
from certman.client.directory import (
    LETSENCRYPT,
    LETSENCRYPT_STAGING,
    Directory,
    fetch_directory,
    resolve_directory_url,
)
from certman.client.identifiers import Identifier, parse_identifiers
from certman.client.network import USER_AGENT
from certman.client.order import IssuedCertificate, RevocationReason, select_chain

__all__ = [
    "LETSENCRYPT",
    "LETSENCRYPT_STAGING",
    "USER_AGENT",
    "Account",
    "AcmeClient",
    "Directory",
    "ExternalAccountBinding",
    "Identifier",
    "IssuedCertificate",
    "RevocationReason",
    "fetch_directory",
    "parse_identifiers",
    "resolve_directory_url",
    "select_chain",
]
