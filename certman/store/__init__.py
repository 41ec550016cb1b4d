"""Where certman keeps its state: accounts, certificates, meta, tokens and locks.

:class:`Store` is the protocol; :class:`FileStore` the embedded default;
``PostgresStore`` (``certman.store.PostgresStore``, needs the
``certman[postgres]`` extra, imported on first use and so not in
``__all__``) the store several machines share.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from certman.store.postgres import PostgresStore as PostgresStore


def __getattr__(name: str) -> Any:
    # ``PostgresStore`` is imported on first use: psycopg is the optional
    # ``certman[postgres]`` extra, and FileStore users should not pay for it.
    if name == "PostgresStore":
        from certman.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
