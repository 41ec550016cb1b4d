"""Opt-in network: fetch a missing intermediate from the AIA ``caIssuers`` URL.

A certificate's Authority Information Access extension may name a URL where
its issuer's certificate can be downloaded (RFC 5280 §4.2.2.1) -- DER
(``application/pkix-cert``), PKCS#7 (``application/pkcs7-mime``, a "certs-only"
bundle) or, in practice, sometimes PEM. Browsers quietly do this to paper over
servers that forget to send their intermediate; certman does it only when the
user asks (``--fetch-intermediates``), so that a scan never talks to anyone
the user did not name, and so that the missing intermediate is *reported*
rather than hidden.

Limits: http and https URLs only, a response size cap, a time limit, at most
a few hops up the chain, and a cache (in memory per run, or a directory
shared between runs) so a thousand endpoints behind the same CA cost one
download. A URL that failed is not retried within the fetcher's lifetime.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Final, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from certman._atomic import replace_file as _replace_file
from certman._version import __version__
from certman.errors import InspectorError
from certman.inspector.inspection import InspectOptions, inspect, trust_store_for, utc_now
from certman.inspector.load import Bundle
from certman.inspector.model import Finding, Report, ScanResult
from certman.inspector.repair import build_path, describe, issued_by

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_MAX_BYTES: Final = 256 * 1024  # an intermediate is ~2 KB; a PKCS#7 bundle a few
DEFAULT_MAX_DEPTH: Final = 4
MAX_REDIRECTS: Final = 3
USER_AGENT: Final = f"certman/{__version__}"


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    """The certificate's AIA caIssuers URLs that certman may fetch (http/https only)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls: list[str] = []
    for desc in aia:
        if desc.access_method != AuthorityInformationAccessOID.CA_ISSUERS:
            continue
        loc = desc.access_location
        if isinstance(loc, x509.UniformResourceIdentifier):
            if urlsplit(loc.value).scheme.lower() in ("http", "https"):
                urls.append(loc.value)
            else:
                log.debug("skipping AIA URL %s (only http/https are fetched)", loc.value)
    return urls


def parse_issuer_certs(data: bytes) -> list[x509.Certificate]:
    """Certificates from an AIA response: DER, PEM (one or many), or PKCS#7 (DER or PEM).

    Raises :class:`InspectorError` (``aia-parse``) when none can be read.
    """
    stripped = data.lstrip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            if b"-----BEGIN PKCS7-----" in stripped or b"-----BEGIN CERTIFICATE CHAIN" in stripped:
                return list(pkcs7.load_pem_pkcs7_certificates(stripped))
            return list(x509.load_pem_x509_certificates(stripped))
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            return list(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError as exc:
        raise InspectorError(
            "AIA response is not a certificate (DER, PEM or PKCS#7)", code="aia-parse"
        ) from exc


# ---------------------------------------------------------------------------
# Caches
# ---------------------------------------------------------------------------


class AiaCache(Protocol):
    """Where fetched issuer certificates are kept, keyed by URL.

    Contract: thread safe; ``get`` returns the DER certificates stored for
    the URL, or None when there is nothing (or nothing fresh) -- never raises
    for a miss or a damaged entry; ``put`` may silently drop entries (it is a
    cache) but must never store a partial entry.
    """

    def get(self, url: str) -> tuple[bytes, ...] | None: ...

    def put(self, url: str, ders: tuple[bytes, ...]) -> None: ...


class MemoryAiaCache:
    """An in-process LRU of at most ``max_entries`` URLs. Thread safe."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> tuple[bytes, ...] | None:
        with self._lock:
            value = self._data.get(url)
            if value is not None:
                self._data.move_to_end(url)
            return value

    def put(self, url: str, ders: tuple[bytes, ...]) -> None:
        with self._lock:
            self._data[url] = ders
            self._data.move_to_end(url)
            while len(self._data) > self._max:
                self._data.popitem(last=False)


class DirectoryAiaCache:
    """Fetched issuers as PEM files in ``directory`` (0700), fresh for ``max_age``.

    One file per URL (named by the URL's SHA-256), written atomically (temp
    file + rename), so several processes may share the directory. Only public
    certificates are stored.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_age: dt.timedelta = dt.timedelta(days=7)
    ) -> None:
        self.directory = Path(directory)
        self.max_age = max_age

    def _path(self, url: str) -> Path:
        return self.directory / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".pem")

    def get(self, url: str) -> tuple[bytes, ...] | None:
        path = self._path(url)
        try:
            age = time.time() - path.stat().st_mtime
            if age > self.max_age.total_seconds():
                return None
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            return None
        return tuple(c.public_bytes(Encoding.DER) for c in certs)

    def put(self, url: str, ders: tuple[bytes, ...]) -> None:
        if not ders:
            return
        pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in ders)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _replace_file(self._path(url), pem, 0o600, tmp_prefix=".aia-")
        except OSError as exc:
            log.warning("cannot write the AIA cache in %s: %s", self.directory, exc)


# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow at most MAX_REDIRECTS redirects, and only to http/https."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            fp.close()  # urllib closes it only when we return a request
            raise InspectorError(
                f"AIA URL {req.full_url} redirects to a non-HTTP URL", code="aia-bad-url"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def _opener(cafile: str | None) -> urllib.request.OpenerDirector:
    import certifi

    context = ssl.create_default_context(cafile=cafile or certifi.where())
    return urllib.request.build_opener(
        _RedirectHandler, urllib.request.HTTPSHandler(context=context)
    )


class AiaFetcher:
    """Fetches issuer certificates from AIA URLs, with a cache and hard limits.

    ``timeout`` bounds each download (connect plus every read, and the whole
    body is abandoned once it is exceeded); ``max_bytes`` caps the body.
    Thread safe: concurrent requests for the same URL wait for one download
    ("single flight"), and a URL that failed fails fast for the rest of the
    fetcher's life. The process's proxy settings (``http_proxy`` ...) apply,
    as for any HTTP client.
    """

    def __init__(
        self,
        *,
        cache: AiaCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        cafile: str | None = None,
    ) -> None:
        self.cache: AiaCache = cache if cache is not None else MemoryAiaCache()
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._opener = _opener(cafile)
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}
        self._failures: dict[str, InspectorError] = {}
        self.downloads = 0  # network fetches made (for reports and tests)

    def fetch(self, url: str) -> list[x509.Certificate]:
        """The certificates published at ``url``; :class:`InspectorError` on failure.

        Codes: ``aia-bad-url``, ``aia-timeout``, ``aia-http`` (non-200),
        ``aia-network``, ``aia-too-large``, ``aia-parse``.
        """
        with self._lock:
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        with url_lock:
            cached = self.cache.get(url)
            if cached is not None:
                return [x509.load_der_x509_certificate(d) for d in cached]
            failed = self._failures.get(url)
            if failed is not None:
                raise failed
            try:
                certs = parse_issuer_certs(self._download(url))
            except InspectorError as exc:
                self._failures[url] = exc
                raise
            self.cache.put(url, tuple(c.public_bytes(Encoding.DER) for c in certs))
            return certs

    def _download(self, url: str) -> bytes:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise InspectorError(f"not fetching {url}: only http and https", code="aia-bad-url")
        log.info("fetching issuer certificate from %s", url)
        with self._lock:
            self.downloads += 1
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/pkix-cert, application/pkcs7-mime, */*;q=0.5",
            },
        )
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise InspectorError(
                        f"AIA response from {url} is {length} bytes (limit {self.max_bytes})",
                        code="aia-too-large",
                    )
                chunks: list[bytes] = []
                size = 0
                while True:
                    if time.monotonic() > deadline:
                        raise self._timed_out(url)
                    chunk = response.read(16384)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise InspectorError(
                            f"AIA response from {url} exceeds {self.max_bytes} bytes",
                            code="aia-too-large",
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:  # urllib refused the redirect (e.g. to file:)
                raise InspectorError(
                    f"AIA URL {url} redirects where certman does not follow", code="aia-bad-url"
                ) from exc
            raise InspectorError(
                f"AIA fetch from {url} failed: HTTP {exc.code} {exc.reason}", code="aia-http"
            ) from exc
        except TimeoutError as exc:
            raise self._timed_out(url) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise self._timed_out(url) from exc
            raise InspectorError(
                f"AIA fetch from {url} failed: {reason}", code="aia-network"
            ) from exc
        except OSError as exc:
            raise InspectorError(
                f"AIA fetch from {url} failed: {exc.strerror or exc}", code="aia-network"
            ) from exc

    def _timed_out(self, url: str) -> InspectorError:
        """The one ``aia-timeout`` error: the socket timed out or the deadline passed."""
        return InspectorError(
            f"AIA fetch from {url} took longer than {self.timeout:g}s", code="aia-timeout"
        )

    def find_issuer(
        self, cert: x509.Certificate, errors: list[str] | None = None
    ) -> x509.Certificate | None:
        """The certificate that issued ``cert``, from its AIA URLs; None if none works.

        Only a certificate whose name and key verify ``cert``'s signature is
        accepted: what the URL serves is untrusted input. Failures are
        appended to ``errors`` as readable lines.
        """
        for url in ca_issuers_urls(cert):
            try:
                candidates = self.fetch(url)
            except InspectorError as exc:
                if errors is not None:
                    errors.append(exc.message)
                continue
            for candidate in candidates:
                if issued_by(cert, candidate):
                    return candidate
            if errors is not None:
                errors.append(f"{url} did not serve the issuer of {cert.subject.rfc4514_string()}")
        return None


@dataclass(frozen=True)
class FetchOutcome:
    """What :func:`fetch_missing` found: issuers in path order, and why it stopped early."""

    fetched: tuple[x509.Certificate, ...]
    complete: bool
    errors: tuple[str, ...]


def fetch_missing(
    certs: Sequence[x509.Certificate],
    fetcher: AiaFetcher,
    *,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate] = (),
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> FetchOutcome:
    """Follow AIA from the top of the bundle's path until it reaches a root or an anchor.

    Nothing is fetched when the bundle is already complete. At most
    ``max_depth`` certificates are fetched.
    """
    fetched: list[x509.Certificate] = []
    errors: list[str] = []
    for _ in range(max_depth + 1):
        path = build_path([*certs, *fetched], now=now, anchors=anchors)
        if path.complete:
            return FetchOutcome(tuple(fetched), True, tuple(errors))
        if len(fetched) >= max_depth:
            errors.append(f"gave up after fetching {max_depth} certificates")
            break
        issuer = fetcher.find_issuer(path.top, errors)
        if issuer is None:
            if not ca_issuers_urls(path.top):
                errors.append(f"{path.top.subject.rfc4514_string()} has no AIA caIssuers URL")
            break
        known = {c.public_bytes(Encoding.DER) for c in (*certs, *fetched)}
        if issuer.public_bytes(Encoding.DER) in known:
            break  # a loop: the URL serves something we already have
        fetched.append(issuer)
    return FetchOutcome(tuple(fetched), False, tuple(errors))


#: Held around inspect() and load_ders() when they run on endpoint worker
#: threads. They are CPU-bound under the GIL (so this costs little), and
#: they use warnings.catch_warnings(), which swaps the process-wide filter
#: list and is not thread safe: concurrent use can leak or drop the filter
#: that silences cryptography's warnings about malformed certificates.
INSPECT_LOCK = threading.Lock()

# Rules about the shape of what was received; on the completed chain they
# would only describe certman's own re-assembly.
_STRUCTURAL = frozenset({"chain-order", "extra-cert", "root-included", "missing-intermediate"})


def inspect_with_fetching(
    bundle: Bundle,
    *,
    fetcher: AiaFetcher,
    now: dt.datetime,
    host: str | None = None,
    keys: Sequence[PrivateKeyTypes] = (),
    options: InspectOptions | None = None,
) -> Report:
    """Inspect ``bundle`` as received and, if an issuer is missing, judge the rest via AIA.

    The report stays about what was *received*: ``missing-intermediate``
    still fires (the server or file is still broken; browsers that do not
    fetch will fail), its message names what AIA supplied, and the chain
    analysis and certificate list are unchanged. What the completed chain
    adds is appended: findings about the fetched certificates themselves
    (expired, distrusted, weak...; ``cert`` is None and the message names
    the certificate), ``untrusted-root`` when the completed chain ends
    outside the trust store, and findings that need the whole chain (e.g.
    ``distrusted-ca`` matched by an intermediate's fingerprint).
    """
    opts = options or InspectOptions()
    with INSPECT_LOCK:
        report = inspect(bundle, now=now, host=host, keys=keys, options=opts)
    if report.chain.complete:
        return report
    store = trust_store_for(opts.trust_store)
    outcome = fetch_missing(bundle.certificates, fetcher, now=now, anchors=store.certificates())
    if not outcome.fetched:
        note = "; AIA: " + "; ".join(outcome.errors) if outcome.errors else ""
        return replace(
            report,
            findings=tuple(
                replace(f, message=f.message + note) if f.rule == "missing-intermediate" else f
                for f in report.findings
            ),
        )
    n = len(bundle.certificates)
    with INSPECT_LOCK:
        completed = inspect(
            replace(bundle, certificates=bundle.certificates + outcome.fetched),
            now=now,
            host=host,
            keys=keys,
            options=opts,
        )
    names = ", ".join(repr(describe(c)) for c in outcome.fetched)
    verdict = (
        f"trusted via {completed.chain.anchor}"
        if completed.chain.trusted
        else "complete"
        if completed.chain.complete
        else "still incomplete"
    )
    findings: list[Finding] = [
        replace(f, message=f"{f.message}; fetched over AIA: {names} (chain then {verdict})")
        if f.rule == "missing-intermediate"
        else f
        for f in report.findings
    ]
    seen = {(f.rule, f.cert, f.message) for f in report.findings}
    for f in completed.findings:
        if f.rule in _STRUCTURAL or (f.rule, f.cert, f.message) in seen:
            continue
        if f.cert is not None and f.cert >= n:
            f = replace(
                f,
                cert=None,
                message=f"fetched {describe(outcome.fetched[f.cert - n])!r}: {f.message}",
            )
        findings.append(f)
    findings.sort(key=lambda f: (-f.severity, f.cert if f.cert is not None else -1, f.rule))
    return replace(report, findings=tuple(findings))


def scan_fetching(
    sources: Iterable[Any],
    *,
    fetcher: AiaFetcher,
    now: dt.datetime | None = None,
    options: InspectOptions | None = None,
    concurrency: int = 16,
    stdin: IO[bytes] | None = None,
) -> Iterator[ScanResult]:
    """Like :func:`certman.scan`, with :func:`inspect_with_fetching` for every source.

    For ``certman scan FILE... --fetch-intermediates``: sources (anything
    :func:`~certman.inspector.sources.iter_sources` takes) are read and
    inspected on ``concurrency`` threads, because the work now waits on the
    network; the CPU part runs one at a time. Lazy and bounded like
    :func:`~certman.inspector.endpoints.bounded_map`; results in completion
    order; never raises for a bad source.
    """
    from certman.inspector.endpoints import bounded_map
    from certman.inspector.sources import iter_sources, load_raw

    when = utc_now(now)
    opts = options or InspectOptions()
    trust_store_for(opts.trust_store)

    def work(source: Any) -> ScanResult:
        sid = str(source.id)
        try:
            raw = source.read()
            with INSPECT_LOCK:
                bundle = load_raw(raw, source=sid)
            report = inspect_with_fetching(
                bundle, fetcher=fetcher, now=when, host=raw.host, options=opts
            )
        except InspectorError as exc:
            return ScanResult(source=sid, error=exc.message, error_code=exc.code)
        except Exception as exc:  # one odd input must not end a fleet scan
            log.exception("internal error inspecting %s", sid)
            return ScanResult(
                source=sid, error=f"{sid}: internal error: {exc}", error_code="internal"
            )
        return ScanResult(source=sid, report=report)

    items = iter_sources(sources, max_size=opts.max_size, password=opts.password, stdin=stdin)
    return bounded_map(items, work, concurrency=concurrency, name="certman-aia")


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_TIMEOUT",
    "AiaCache",
    "AiaFetcher",
    "DirectoryAiaCache",
    "FetchOutcome",
    "MemoryAiaCache",
    "ca_issuers_urls",
    "fetch_missing",
    "inspect_with_fetching",
    "parse_issuer_certs",
    "scan_fetching",
]
