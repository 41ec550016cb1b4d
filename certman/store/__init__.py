"""Where certman keeps its state: accounts, certificates, meta, tokens and locks.

:class:`Store` is the protocol; :class:`FileStore` the embedded default.
"""

from certman.store._open import open_store
from certman.store.base import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    CertificateVersion,
    Store,
    account_id_for_url,
    ca_key,
    validate_name,
)
from certman.store.files import FileStore, default_root

__all__ = [
    "AccountRecord",
    "CertificateFiles",
    "CertificateMeta",
    "CertificateVersion",
    "FileStore",
    "Store",
    "account_id_for_url",
    "ca_key",
    "default_root",
    "open_store",
    "validate_name",
]
