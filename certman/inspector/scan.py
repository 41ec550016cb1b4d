"""Streaming, parallel fleet scan.

``scan(sources)`` yields one :class:`ScanResult` per source as workers finish
them, so memory stays flat however many sources there are:

* sources are expanded lazily (:func:`iter_sources`) and sent to worker
  processes in chunks; the sources read themselves *in the worker* (a path
  crosses the process boundary, not the file);
* at most a few chunks per worker are in flight (``concurrent.futures``
  with explicit back-pressure: ``Pool.imap_unordered`` would read the whole
  input ahead, which is exactly what a million-row database cursor must not
  do);
* each worker keeps its own caches (parsed intermediates, their facts,
  signature results, trust anchoring), so shared intermediates cost once
  per worker, not once per bundle.

:func:`scan_map` applies a picklable function to each result *inside* the
worker (the CLI renders JSON lines there), so only small strings travel back.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from itertools import islice
from typing import Any, TypeVar

from certman.errors import InspectorError
from certman.inspector.inspection import InspectOptions, inspect, trust_store_for, utc_now
from certman.inspector.load import DEFAULT_MAX_SIZE, quiet
from certman.inspector.model import ScanResult
from certman.inspector.sources import Source, iter_sources, load_raw

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CHUNK = 200


def inspect_source(source: Source, *, now: dt.datetime, options: InspectOptions) -> ScanResult:
    """Read and inspect one source; never raises (errors become error results)."""
    sid = _id_of(source)
    try:
        raw = source.read()
        bundle = load_raw(raw, source=sid)
        report = inspect(bundle, now=now, host=raw.host, options=options)
        return ScanResult(source=sid, report=report)
    except InspectorError as exc:
        return ScanResult(source=sid, error=exc.message, error_code=exc.code)
    except Exception as exc:
        # One odd input must not end a scan of a fleet; the log has the trace.
        logger.exception("internal error inspecting %s", sid)
        return ScanResult(source=sid, error=f"{sid}: internal error: {exc}", error_code="internal")


def _id_of(source: Source) -> str:
    try:
        return str(source.id)
    except Exception:  # pragma: no cover - a broken plug-in
        return repr(source)


def _identity(result: ScanResult) -> ScanResult:
    return result


_WORKER: tuple[dt.datetime, InspectOptions, Callable[[ScanResult], Any]] | None = None


def _init_worker(
    now: dt.datetime, options: InspectOptions, fn: Callable[[ScanResult], Any]
) -> None:
    global _WORKER
    _WORKER = (now, options, fn)
    trust_store_for(options.trust_store)  # load once, up front
    # Everything alive now (the imported library, the trust store) lives as
    # long as the worker: keep it out of the cyclic collector's scans, which
    # otherwise cost about a tenth of the per-source work (callgrind).
    gc.freeze()


def _work(chunk: list[Source]) -> list[Any]:
    assert _WORKER is not None, "worker not initialised"
    now, options, fn = _WORKER
    with quiet():  # once per chunk, not twice per source (see load.quiet)
        return [fn(inspect_source(s, now=now, options=options)) for s in chunk]


def _chunks(items: Iterator[Source], size: int) -> Iterator[list[Source]]:
    # Small chunks first, so a small scan still spreads over every worker and
    # the first results come quickly; full-size chunks after that.
    current = min(8, size)
    while True:
        chunk = list(islice(items, current))
        if not chunk:
            return
        yield chunk
        current = min(size, current * 2)


def scan_map(
    sources: Iterable[Any],
    fn: Callable[[ScanResult], T],
    *,
    now: dt.datetime | None = None,
    workers: int | None = None,
    options: InspectOptions | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_size: int = DEFAULT_MAX_SIZE,
    password: bytes | None = None,
    stdin: Any = None,
) -> Iterator[T]:
    """Like :func:`scan`, but yields ``fn(result)``, computed in the worker.

    ``fn`` must be picklable (a module-level function). Results come in
    completion order.
    """
    opts = options or InspectOptions(max_size=max_size)
    when = utc_now(now)
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count < 1:
        raise InspectorError("workers must be >= 1", code="bad-workers")
    secret = password if password is not None else opts.password
    items = iter_sources(sources, max_size=opts.max_size, password=secret, stdin=stdin)
    if count == 1:
        trust_store_for(opts.trust_store)
        for source in items:
            yield fn(inspect_source(source, now=when, options=opts))
        return
    yield from _parallel(items, fn, when, opts, count, chunk_size)


def _parallel(
    items: Iterator[Source],
    fn: Callable[[ScanResult], T],
    now: dt.datetime,
    options: InspectOptions,
    workers: int,
    chunk_size: int,
) -> Iterator[T]:
    methods = multiprocessing.get_all_start_methods()
    # fork is cheapest (workers inherit the imported library) and safe when
    # this process has no other threads (the executor forks its workers
    # before starting its own). A caller with threads (a web app, a test
    # runner with a server thread) gets forkserver/spawn instead: forking a
    # threaded process can deadlock a child on a lock held by another thread.
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    ctx = multiprocessing.get_context(method)
    max_pending = workers * 3
    chunks = _chunks(items, chunk_size)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(now, options, fn),
    ) as pool:
        pending: set[Future[list[T]]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < max_pending:
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                        break
                    pending.add(pool.submit(_work, chunk))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        finally:
            for future in pending:
                future.cancel()


def scan(
    sources: Iterable[Any],
    *,
    now: dt.datetime | None = None,
    workers: int | None = None,
    options: InspectOptions | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_size: int = DEFAULT_MAX_SIZE,
    password: bytes | None = None,
) -> Iterator[ScanResult]:
    """Inspect many sources in parallel; yield one result per source as it completes.

    ``sources`` may mix paths, directories, globs, ``"-"``, bytes, PEM text,
    ``(id, pem)`` rows, dicts and objects with ``id``/``pem``, and
    :class:`Source` plug-ins (see :func:`iter_sources`). ``workers``
    defaults to all cores (1 runs in this process). A source that cannot be
    read gives an error result; the scan goes on.
    """
    return scan_map(
        sources,
        _identity,
        now=now,
        workers=workers,
        options=options,
        chunk_size=chunk_size,
        max_size=max_size,
        password=password,
    )
