"""Sources: where bundles come from (files, trees, globs, stdin, database rows, ...).

A :class:`Source` has an ``id`` (what reports call it) and a ``read()`` that
returns a :class:`RawChain`: either bytes in any supported format or a list
of DER certificates as received (what a TLS handshake gives), plus an
optional host name for ``hostname-mismatch``. Sources are plug-ins: anything
with that shape works, e.g. a live TLS endpoint.

In a parallel scan, ``read()`` runs in a worker process, so a source must be
picklable and cheap to send (a path, a row, a host name; not an open socket).
:func:`iter_sources` turns what a user typed or passed (paths, directories,
globs, ``-``, bytes, ``(id, pem)`` rows, dicts, objects with ``id``/``pem``)
into sources, lazily: a tree of a million files is walked as it is scanned.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, runtime_checkable

from cryptography import x509

from certman.errors import InspectorError
from certman.inspector.load import DEFAULT_MAX_SIZE, Bundle, load_bundle, load_ders, read_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawChain:
    """What a source yields: ``data`` to load (PEM/DER/PKCS#7/PKCS#12), or ``ders``
    (certificates as received, in order); ``host`` enables hostname checks."""

    data: bytes | None = None
    ders: tuple[bytes, ...] | None = None
    host: str | None = None
    password: bytes | None = field(default=None, repr=False)


@runtime_checkable
class Source(Protocol):
    """Something to inspect.

    Contract: ``id`` is stable and human-readable (a path, a row id,
    ``host:port``). ``read()`` is called once, possibly in another process
    (so the object must be picklable); it may do I/O and raises
    :class:`InspectorError` (with a ``code``) when the source cannot be
    read — that becomes one ``error`` result, and the scan goes on. It need
    not be thread-safe.
    """

    @property
    def id(self) -> str:
        """How reports name this source."""
        ...

    def read(self) -> RawChain:
        """The raw chain to inspect."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A file on disk, read with a size cap (``file-too-large`` above it)."""

    path: str
    max_size: int = DEFAULT_MAX_SIZE
    password: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.path

    def read(self) -> RawChain:
        return RawChain(data=read_file(self.path, max_size=self.max_size), password=self.password)


@dataclass(frozen=True)
class BytesSource:
    """Bytes already in memory (a database row, a PEM string, stdin)."""

    id: str
    data: bytes
    host: str | None = None
    password: bytes | None = field(default=None, repr=False)

    def read(self) -> RawChain:
        return RawChain(data=self.data, host=self.host, password=self.password)


@dataclass(frozen=True)
class ErrorSource:
    """A source already known to be broken (e.g. an invalid JSON line)."""

    id: str
    message: str
    code: str = "bad-input"

    def read(self) -> RawChain:
        raise InspectorError(self.message, code=self.code, source=self.id)


def load_raw(raw: RawChain, *, source: str) -> Bundle:
    """Turn a RawChain into a Bundle (InspectorError when nothing can be read)."""
    if raw.ders is not None:
        return load_ders(raw.ders, source=source)
    if raw.data is None:
        raise InspectorError(f"{source}: nothing to read", code="empty-input", source=source)
    return load_bundle(raw.data, source=source, password=raw.password)


def _walk(root: str, max_size: int, password: bytes | None) -> Iterator[Source]:
    def on_error(exc: OSError) -> None:
        logger.warning("cannot list %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames.sort()
        for name in sorted(filenames):
            yield FileSource(os.path.join(dirpath, name), max_size, password)


def _path_sources(item: str, max_size: int, password: bytes | None) -> Iterator[Source]:
    if os.path.isdir(item):
        yield from _walk(item, max_size, password)
    elif not os.path.lexists(item) and glob.has_magic(item):
        for match in sorted(glob.iglob(item, recursive=True)):
            if os.path.isdir(match):
                yield from _walk(match, max_size, password)
            else:
                yield FileSource(match, max_size, password)
    else:
        # A missing file is still a source: reading it gives one error result.
        yield FileSource(item, max_size, password)


def iter_sources(
    items: Iterable[Any],
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    password: bytes | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[Source]:
    """Expand what the user gave into sources, lazily.

    Each item may be: a :class:`Source`; a live TLS endpoint written
    ``host:port``, ``https://host[:port]``, ``[ipv6]:port`` or
    ``smtp://host`` (when no file of that name exists; see
    :mod:`certman.inspector.endpoints`); ``"-"`` (stdin: JSON lines
    ``{"id", "pem"[, "host"]}`` or concatenated PEM); a path to a file or a
    directory (walked recursively), or a glob; PEM text; ``bytes``; an
    ``(id, pem)`` pair; a dict with ``id`` and ``pem``; any object with
    ``id`` and ``pem`` attributes (an ORM row).
    """
    for n, item in enumerate(items):
        if isinstance(item, Source):
            yield item
        elif isinstance(item, bytes | bytearray | memoryview):
            yield BytesSource(f"<bytes#{n}>", bytes(item), password=password)
        elif isinstance(item, str) and item == "-":
            yield from stdin_sources(stdin if stdin is not None else sys.stdin.buffer)
        elif isinstance(item, str) and "-----BEGIN" in item:
            yield BytesSource(f"<pem#{n}>", item.encode(), password=password)
        elif isinstance(item, str) and _is_endpoint(item):
            yield _endpoint_source(item)
        elif isinstance(item, str | os.PathLike):
            yield from _path_sources(os.fspath(item), max_size, password)
        elif isinstance(item, tuple) and len(item) == 2:
            yield _row(item[0], item[1], None, password)
        elif isinstance(item, dict) and "pem" in item:
            yield _row(item.get("id", f"<row#{n}>"), item["pem"], item.get("host"), password)
        elif hasattr(item, "pem"):
            yield _row(
                getattr(item, "id", f"<row#{n}>"), item.pem, getattr(item, "host", None), password
            )
        else:
            yield ErrorSource(
                f"<item#{n}>", f"cannot scan a {type(item).__name__}", code="bad-source"
            )


def _is_endpoint(item: str) -> bool:
    # Local import: endpoints.py imports this module (RawChain).
    from certman.inspector.endpoints import looks_like_endpoint

    return not os.path.lexists(item) and looks_like_endpoint(item)


def _endpoint_source(item: str) -> Source:
    """A live endpoint (``host:port``, ``https://...``): read in the worker over TLS."""
    from certman.inspector.endpoints import EndpointSource, parse_endpoint

    try:
        return EndpointSource(parse_endpoint(item))
    except InspectorError as exc:
        return ErrorSource(item, exc.message, exc.code)


def _row(ident: Any, pem: Any, host: Any, password: bytes | None) -> Source:
    data = pem.encode() if isinstance(pem, str) else pem
    if not isinstance(data, bytes | bytearray | memoryview):
        return ErrorSource(str(ident), f"{ident}: pem is a {type(pem).__name__}", "bad-source")
    return BytesSource(str(ident), bytes(data), host if isinstance(host, str) else None, password)


def stdin_sources(stream: IO[bytes], *, name: str = "<stdin>") -> Iterator[Source]:
    """Sources from a stream of JSON lines or of concatenated PEM.

    JSON lines (first non-blank byte ``{``): one source per line, id from
    ``"id"``; a bad line is one error result. Concatenated PEM: a new
    bundle starts at each end-entity certificate, so ``leaf, intermediates,
    leaf, intermediates...`` (what ``psql -At`` prints for a column of
    full chains) gives one source per chain.
    """
    first = b""
    while True:
        line = stream.readline()
        if not line:
            return
        if line.strip():
            first = line
            break
    if first.lstrip().startswith(b"{"):
        yield from _json_lines(first, stream, name)
    else:
        yield from _pem_groups(first, stream, name)


def _json_lines(first: bytes, stream: IO[bytes], name: str) -> Iterator[Source]:
    lineno = 0
    for line in _chain_first(first, stream):
        lineno += 1
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield ErrorSource(f"{name}:{lineno}", f"{name} line {lineno}: bad JSON: {exc}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("pem"), str):
            yield ErrorSource(
                f"{name}:{lineno}", f'{name} line {lineno}: expected {{"id": ..., "pem": "..."}}'
            )
            continue
        ident = obj.get("id")
        yield _row(
            ident if ident is not None else f"{name}:{lineno}", obj["pem"], obj.get("host"), None
        )


def _chain_first(first: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    yield first
    yield from stream


def _pem_groups(first: bytes, stream: IO[bytes], name: str) -> Iterator[Source]:
    group: list[bytes] = []
    block: list[bytes] = []
    has_cert = False
    count = 0
    for line in _chain_first(first, stream):
        if block or line.startswith(b"-----BEGIN "):
            block.append(line)
            if not line.startswith(b"-----END "):
                continue
            text = b"".join(block)
            block = []
            if b"CERTIFICATE-----" in line and has_cert and _is_end_entity(text):
                count += 1
                yield BytesSource(f"{name}#{count}", b"".join(group))
                group, has_cert = [], False
            group.append(text)
            has_cert = has_cert or b"CERTIFICATE-----" in line
        else:
            group.append(line)
    group.extend(block)
    if any(g.strip() for g in group):
        count += 1
        yield BytesSource(f"{name}#{count}", b"".join(group))


def _is_end_entity(pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(pem)
        return not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False
