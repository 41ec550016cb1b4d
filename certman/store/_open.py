"""Choosing a store from what the user gave: a directory or a database URL."""

from __future__ import annotations

import importlib
import os
from typing import cast

from certman.errors import ConfigError
from certman.store.base import Store
from certman.store.files import FileStore

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str | None = None, *, home: str | os.PathLike[str] | None = None) -> Store:
    """Open the store the user asked for.

    ``url`` (``--store`` / ``$CERTMAN_STORE``) wins: ``postgresql://...``
    opens a ``PostgresStore`` (needs the ``certman[postgres]`` extra);
    ``file:///path`` or a plain path opens a ``FileStore`` there. Without a
    URL, a ``FileStore`` at ``home`` (or its default root). Anything else is a
    ``ConfigError`` (code ``store-url``).
    """
    if url:
        if url.startswith(_POSTGRES_SCHEMES):
            # Imported lazily: psycopg is an optional extra, and single-machine
            # users should not pay for importing it.
            try:
                module = importlib.import_module("certman.store.postgres")
            except ImportError as exc:
                raise ConfigError(
                    "PostgreSQL store needs the postgres extra: "
                    f"pip install 'certman[postgres]' ({exc})",
                    code="store-url",
                ) from exc
            return cast(Store, module.PostgresStore(url))
        if url.startswith("file://"):
            return FileStore(url.removeprefix("file://"))
        if "://" in url:
            raise ConfigError(
                f"unsupported store URL scheme: {url.split('://', 1)[0]}://"
                " (use postgresql://... or a directory)",
                code="store-url",
            )
        return FileStore(url)
    return FileStore(home)
