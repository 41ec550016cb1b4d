"""Live TLS endpoints: parse ``host[:port]`` specs, connect, read the chain as sent.

What matters for an audit is the chain a server *actually sends*, not the file
someone thinks is deployed. This module connects to endpoints with pyOpenSSL
(the standard ``ssl`` module cannot hand out the unverified peer chain before
Python 3.13), never verifies during the handshake (judging the chain is the
inspector's job, and a verifying handshake would hide exactly the broken
chains we are looking for), and returns the certificates byte for byte, in the
order the server sent them.

Every way a connection can fail -- the name does not resolve, the port refuses,
a timeout, a failed handshake, a server that will not STARTTLS -- is an
:class:`EndpointResult` with a stable ``code`` and a readable reason, never an
exception: a scan of a thousand hosts must not stop at the first dead one.

Many endpoints at once: :func:`fetch_chains` streams its input, keeps a bounded
number of connections in flight (threads; the work is waiting on the network,
and pyOpenSSL releases the GIL in OpenSSL calls) and yields results as they
complete, so memory stays flat however long the host list is.

Network use: only the endpoints the caller names (plus DNS for their names).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import re
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from certman.errors import InspectorError
from certman.inspector.aia import INSPECT_LOCK, AiaFetcher, inspect_with_fetching
from certman.inspector.inspection import InspectOptions, inspect, trust_store_for, utc_now
from certman.inspector.load import load_ders
from certman.inspector.model import ScanResult

if TYPE_CHECKING:
    # Imported in EndpointSource.read(): sources.py recognises endpoint specs
    # and so imports this module.
    from certman.inspector.sources import RawChain

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 443
DEFAULT_CONCURRENCY: Final = 64
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

Resolver = Callable[..., list[tuple[Any, Any, Any, Any, Any]]]
STARTTLS_PROTOCOLS: Final[tuple[str, ...]] = ("smtp", "imap", "pop3", "ftp")

#: Ports on which STARTTLS is used when the caller does not say otherwise.
#: Implicit-TLS ports (465, 993, 995, 990) need nothing: TLS starts at once.
STARTTLS_BY_PORT: Final[dict[int, str]] = {
    25: "smtp",
    587: "smtp",
    143: "imap",
    110: "pop3",
    21: "ftp",
}

#: URL schemes accepted in endpoint specs: scheme -> (default port, STARTTLS protocol or None).
SCHEMES: Final[dict[str, tuple[int, str | None]]] = {
    "https": (443, None),
    "tls": (443, None),
    "smtp": (25, "smtp"),
    "submission": (587, "smtp"),
    "smtps": (465, None),
    "imap": (143, "imap"),
    "imaps": (993, None),
    "pop3": (110, "pop3"),
    "pop3s": (995, None),
    "ftp": (21, "ftp"),
    "ftps": (990, None),
    "ldaps": (636, None),
}

# Stable result codes (also the ``code`` of InspectorError raised by parse_endpoint).
CODE_BAD_SPEC: Final = "endpoint-bad-spec"
CODE_DNS: Final = "endpoint-dns"
CODE_REFUSED: Final = "endpoint-refused"
CODE_TIMEOUT: Final = "endpoint-timeout"
CODE_UNREACHABLE: Final = "endpoint-unreachable"
CODE_HANDSHAKE: Final = "endpoint-handshake"
CODE_STARTTLS: Final = "endpoint-starttls"
CODE_NO_CERTIFICATE: Final = "endpoint-no-certificate"
CODE_INTERNAL: Final = "endpoint-internal"

ERROR_CODES: Final[tuple[str, ...]] = (
    CODE_BAD_SPEC,
    CODE_DNS,
    CODE_REFUSED,
    CODE_TIMEOUT,
    CODE_UNREACHABLE,
    CODE_HANDSHAKE,
    CODE_STARTTLS,
    CODE_NO_CERTIFICATE,
    CODE_INTERNAL,
)

# A label of a DNS name as people write them: letters (any script, for IDNs),
# digits, hyphen, underscore (seen in the wild on internal names).
_LABEL = re.compile(r"^[\w-]{1,63}$", re.UNICODE)
_HOST_PORT = re.compile(r"^(?P<host>[^:/\s\[\]]+)(?::(?P<port>\d{1,5}))?$")
_BRACKETED = re.compile(r"^\[(?P<host>[0-9A-Fa-f:.%\w]+)\](?::(?P<port>\d{1,5}))?$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^/?#]*)(?P<tail>[/?#].*)?$")
_SPEC_LOOKS_LIKE_ENDPOINT = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://.+|\[[0-9A-Fa-f:.%\w]+\](?::\d{1,5})?|[^:/\s\\]+:\d{1,5})$"
)


# ---------------------------------------------------------------------------
# Endpoint specs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One TLS endpoint to read a chain from.

    ``host`` is the name as given (lower case, IPv6 without brackets, no
    trailing dot): it is the SNI name and the name ``hostname-mismatch``
    checks. ``connect_host``/``connect_port``, when set, are where the TCP
    connection actually goes (``--connect-to``), so one load balancer can be
    asked for many names. ``starttls`` is the resolved protocol (``None``:
    TLS from the first byte).
    """

    host: str
    port: int = DEFAULT_PORT
    starttls: str | None = None
    connect_host: str | None = None
    connect_port: int | None = None

    @property
    def is_ip(self) -> bool:
        """Whether ``host`` is an IP address literal (then no SNI is sent)."""
        return _is_ip(self.host)

    @property
    def server_name(self) -> str | None:
        """The SNI name to send: the host name, or None for an IP literal (RFC 6066 §3)."""
        return None if self.is_ip else self.host

    @property
    def address(self) -> tuple[str, int]:
        """Where the TCP connection goes: the --connect-to override, else host:port."""
        return (self.connect_host or self.host, self.connect_port or self.port)

    @property
    def label(self) -> str:
        """A short, re-parsable name for reports: ``host:port`` (``smtp://`` etc. for STARTTLS)."""
        hostport = _join_host_port(self.host, self.port)
        base = f"{self.starttls}://{hostport}" if self.starttls else hostport
        if self.connect_host is not None:
            base += f" via {_join_host_port(*self.address)}"
        return base

    def __str__(self) -> str:
        return self.label


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad(spec: str, why: str) -> InspectorError:
    return InspectorError(f"not an endpoint: {spec!r}: {why}", code=CODE_BAD_SPEC, spec=spec)


def _check_port(spec: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    port = int(text)
    if not 1 <= port <= 65535:
        raise _bad(spec, f"port {port} is out of range 1-65535")
    return port


def _check_host(spec: str, host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if not host:
        raise _bad(spec, "empty host name")
    if _is_ip(host):
        return host
    if len(host) > 253:
        raise _bad(spec, "host name longer than 253 characters")
    for label in host.split("."):
        if not _LABEL.match(label):
            raise _bad(spec, f"invalid host name label {label!r}")
    return host


def _split_host_port(spec: str, text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    m = _BRACKETED.match(text)
    if m:
        host = m.group("host")
        if not _is_ip(host) or ":" not in host:
            raise _bad(spec, "brackets are only for IPv6 addresses")
        return host.lower(), _check_port(spec, m.group("port"), default_port)
    if text.count(":") > 1:
        # A bare IPv6 address: "2001:db8::1" -- the port cannot be told apart
        # from the last group, so a port needs brackets ("[2001:db8::1]:8443").
        if _is_ip(text):
            return text.lower(), default_port
        raise _bad(spec, "write an IPv6 address with a port as [address]:port")
    m = _HOST_PORT.match(text)
    if not m:
        raise _bad(spec, "expected host, host:port, [ipv6]:port or https://host[:port]")
    return _check_host(spec, m.group("host")), _check_port(spec, m.group("port"), default_port)


def parse_endpoint(
    spec: str,
    *,
    starttls: str | None = "auto",
    connect_to: str | None = None,
    default_port: int = DEFAULT_PORT,
) -> Endpoint:
    """Parse one endpoint spec; raise :class:`InspectorError` (``endpoint-bad-spec``).

    Accepted: ``host``, ``host:port``, ``[ipv6]:port`` (or a bare IPv6 address
    on the default port), and URLs ``https://host[:port][/path]`` -- plus
    ``smtp://``, ``submission://``, ``imap://``, ``pop3://``, ``ftp://`` (which
    imply STARTTLS) and their implicit-TLS twins ``smtps://``, ``imaps://``,
    ``pop3s://``, ``ftps://``. A path or query in a URL is ignored.

    ``starttls``: ``"auto"`` (the default) uses STARTTLS on the well-known
    plaintext ports (25 and 587 SMTP, 143 IMAP, 110 POP3, 21 FTP); ``None`` or
    ``"none"`` never does; a protocol name forces it. A URL scheme always
    decides for itself. ``connect_to`` (``HOST:PORT`` or ``HOST``) sends the
    TCP connection elsewhere while SNI and the host-name check keep the name.
    """
    text = spec.strip()
    if not text:
        raise _bad(spec, "empty")
    if starttls is not None and starttls not in ("auto", "none", *STARTTLS_PROTOCOLS):
        raise InspectorError(
            f"unknown STARTTLS protocol {starttls!r}; choose one of "
            f"{', '.join(STARTTLS_PROTOCOLS)}, auto or none",
            code="endpoint-bad-starttls",
        )
    scheme_protocol: str | None = None
    from_scheme = False
    m = _URL.match(text)
    if m:
        scheme = m.group("scheme").lower()
        if scheme not in SCHEMES:
            raise _bad(spec, f"unsupported scheme {scheme}:// (use one of {', '.join(SCHEMES)})")
        default_port, scheme_protocol = SCHEMES[scheme]
        from_scheme = True
        rest = m.group("rest")
        if "@" in rest:
            rest = rest.rsplit("@", 1)[1]  # drop user:password@, never used
        host, port = _split_host_port(spec, rest, default_port)
    else:
        if "/" in text or any(c.isspace() for c in text):
            raise _bad(spec, "expected host, host:port, [ipv6]:port or https://host[:port]")
        host, port = _split_host_port(spec, text, default_port)

    protocol: str | None
    if from_scheme:
        protocol = scheme_protocol
    elif starttls is None or starttls == "none":
        protocol = None
    elif starttls == "auto":
        protocol = STARTTLS_BY_PORT.get(port)
    else:
        protocol = starttls

    connect_host: str | None = None
    connect_port: int | None = None
    if connect_to:
        connect_host, connect_port = parse_connect_to(connect_to, default_port=port)
    return Endpoint(
        host=host,
        port=port,
        starttls=protocol,
        connect_host=connect_host,
        connect_port=connect_port,
    )


def parse_connect_to(text: str, *, default_port: int) -> tuple[str, int]:
    """Parse a ``--connect-to`` value: ``HOST:PORT``, ``HOST``, ``[v6]:port``."""
    value = text.strip()
    if not value or "/" in value or any(c.isspace() for c in value):
        raise InspectorError(
            f"bad --connect-to {text!r}: expected HOST:PORT, HOST or [IPv6]:PORT",
            code="endpoint-bad-connect-to",
        )
    try:
        return _split_host_port(text, value, default_port)
    except InspectorError as exc:
        raise InspectorError(
            f"bad --connect-to {text!r}: expected HOST:PORT, HOST or [IPv6]:PORT",
            code="endpoint-bad-connect-to",
        ) from exc


def looks_like_endpoint(text: str) -> bool:
    """Whether a command-line argument is written like an endpoint, not a path.

    True for ``scheme://...``, ``[v6]``/``[v6]:port`` and ``name:port``. A bare
    ``example.org`` is *not* taken for an endpoint (it could be a file name):
    write ``example.org:443`` or use ``--endpoint``. Callers check for an
    existing file first: a file that exists always wins.
    """
    return bool(_SPEC_LOOKS_LIKE_ENDPOINT.match(text.strip()))


def parse_endpoint_line(
    line: str,
    *,
    starttls: str | None = "auto",
    connect_to: str | None = None,
) -> Endpoint:
    """Parse one line of an endpoints file: ``SPEC [CONNECT_TO]``.

    The optional second field is a per-line ``--connect-to`` (it wins over
    the ``connect_to`` given here), e.g. ``shop.example 10.0.0.5:443`` to ask a
    load balancer for one of its names.
    """
    fields = line.split()
    if len(fields) == 1:
        return parse_endpoint(fields[0], starttls=starttls, connect_to=connect_to)
    if len(fields) == 2:
        try:
            return parse_endpoint(fields[0], starttls=starttls, connect_to=fields[1])
        except InspectorError as exc:
            if exc.code == "endpoint-bad-connect-to":
                raise _bad(line, f"second field {fields[1]!r} is not HOST:PORT") from exc
            raise
    raise _bad(line, "expected SPEC or SPEC CONNECT_TO on a line")


def iter_endpoint_lines(lines: Iterable[str]) -> Iterator[str]:
    """The meaningful lines of an endpoints file, lazily: no blanks, no ``#`` comments.

    A ``#`` starts a comment at the beginning of a line or after whitespace.
    """
    for raw in lines:
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointError:
    """Why an endpoint gave no chain: a stable ``code`` and a one-line ``message``.

    ``phase`` is where it failed: ``parse``, ``dns``, ``connect``,
    ``starttls`` or ``handshake``.
    """

    code: str
    message: str
    phase: str

    def to_exception(self) -> InspectorError:
        return InspectorError(self.message, code=self.code, phase=self.phase)


@dataclass(frozen=True)
class EndpointResult:
    """What one endpoint sent (or why it sent nothing).

    ``chain`` holds the certificates in the order the server sent them, DER,
    byte for byte (leaf first when the server is well behaved -- whether it
    is, is for the inspector to judge). Exactly one of ``chain`` (non-empty)
    and ``error`` is set. ``spec`` is the input text, for reports when it could
    not even be parsed.
    """

    spec: str
    endpoint: Endpoint | None
    chain: tuple[bytes, ...] = ()
    error: EndpointError | None = None
    peer: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return self.endpoint.label if self.endpoint is not None else self.spec

    def pem(self) -> bytes:
        """The chain as sent, PEM, in the order received."""
        from cryptography import x509

        return b"".join(
            x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in self.chain
        )


class _Failure(Exception):
    """Internal: carries an EndpointError out of the connection code."""

    def __init__(self, code: str, phase: str, message: str) -> None:
        super().__init__(message)
        self.error = EndpointError(code=code, message=message, phase=phase)


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach one endpoint: time limits in seconds, and the resolver.

    ``connect_timeout`` bounds the TCP connection (all resolved addresses
    together); ``handshake_timeout`` bounds everything after it (the STARTTLS
    dialogue and the TLS handshake). Name resolution uses the system resolver
    and its own timeouts (resolv.conf), which Python cannot interrupt.
    """

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: Name resolution, ``socket.getaddrinfo``-compatible. A seam for tests
    #: and for callers with their own resolver; must be thread safe and raise
    #: ``socket.gaierror`` for names that do not resolve.
    resolver: Resolver = socket.getaddrinfo

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.handshake_timeout <= 0:
            raise InspectorError("timeouts must be positive", code="endpoint-bad-timeout")


@lru_cache(maxsize=1)
def _client_context() -> SSL.Context:
    """One shared client context: scan-friendly, and never verifying.

    Verification is off on purpose (VERIFY_NONE): the inspector judges the
    chain afterwards, and a verifying handshake would abort on exactly the
    broken chains an audit is looking for. Security level 0, TLS 1.0+ and
    legacy renegotiation let us *see* old servers' certificates (SHA-1, small
    keys) instead of failing to talk to them; nothing secret is ever sent.
    Sharing one SSL_CTX between threads is safe: no callbacks are set.
    """
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    ctx.set_options(
        SSL.OP_NO_TICKET
        | SSL.OP_LEGACY_SERVER_CONNECT
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_NO_RENEGOTIATION
    )
    return ctx


def _wait(sock: socket.socket, *, write: bool, deadline: float) -> None:
    """Wait until the socket is readable/writable; a TLS handshake timeout otherwise."""
    remaining = deadline - time.monotonic()
    # poll(), not select(): select() cannot watch descriptors >= 1024, which a
    # busy process reaches.
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    if remaining <= 0 or not poller.poll(remaining * 1000):
        raise _Failure(CODE_TIMEOUT, "handshake", "TLS handshake timed out")


def _resolve(host: str, port: int, resolver: Resolver) -> list[tuple[int, tuple[str, int]]]:
    flags = socket.AI_NUMERICHOST if _is_ip(host) else 0
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM, flags=flags)
    except socket.gaierror as exc:
        raise _Failure(CODE_DNS, "dns", f"cannot resolve {host}: {exc.strerror}") from exc
    except UnicodeError as exc:
        raise _Failure(CODE_DNS, "dns", f"cannot resolve {host}: not a valid IDN") from exc
    out: list[tuple[int, tuple[str, int]]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append((family, (str(sockaddr[0]), int(sockaddr[1]))))
    if not out:
        raise _Failure(CODE_DNS, "dns", f"cannot resolve {host}: no IPv4 or IPv6 address")
    return out


def _connect(host: str, port: int, deadline: float, resolver: Resolver) -> socket.socket:
    """Connect to the first address that answers, trying each in resolver order."""
    addresses = _resolve(host, port, resolver)
    failures: list[tuple[str, str, str]] = []  # (code, addr, reason)
    for family, sockaddr in addresses:
        remaining = deadline - time.monotonic()
        shown = _join_host_port(*sockaddr)
        if remaining <= 0:
            failures.append((CODE_TIMEOUT, shown, "connect timed out"))
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect(sockaddr)
        except ConnectionRefusedError:
            failures.append((CODE_REFUSED, shown, "connection refused"))
        except TimeoutError:
            failures.append((CODE_TIMEOUT, shown, "connect timed out"))
        except OSError as exc:
            failures.append((CODE_UNREACHABLE, shown, exc.strerror or str(exc)))
        else:
            return sock
        sock.close()
    codes = {code for code, _, _ in failures}
    # One class for the result: all refused -> refused; any timeout -> timeout.
    code = (
        CODE_REFUSED
        if codes == {CODE_REFUSED}
        else CODE_TIMEOUT
        if CODE_TIMEOUT in codes
        else CODE_UNREACHABLE
        if CODE_UNREACHABLE in codes
        else next(iter(codes))
    )
    detail = "; ".join(f"{addr}: {why}" for _, addr, why in failures)
    raise _Failure(code, "connect", detail)


class _Lines:
    """Line reader for the plaintext STARTTLS dialogue, bounded in size and time."""

    MAX_LINE: Final = 4096
    MAX_LINES: Final = 200

    def __init__(self, sock: socket.socket, deadline: float, protocol: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.protocol = protocol
        self.buf = b""
        self.count = 0

    def fail(self, message: str) -> _Failure:
        return _Failure(CODE_STARTTLS, "starttls", f"{self.protocol.upper()} STARTTLS: {message}")

    def readline(self) -> str:
        self.count += 1
        if self.count > self.MAX_LINES:
            raise self.fail("too many lines from the server")
        while b"\n" not in self.buf:
            if len(self.buf) > self.MAX_LINE:
                raise self.fail("line too long")
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Failure(CODE_TIMEOUT, "starttls", "STARTTLS dialogue timed out")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError as exc:
                raise _Failure(CODE_TIMEOUT, "starttls", "STARTTLS dialogue timed out") from exc
            except OSError as exc:
                raise self.fail(f"connection lost ({exc.strerror or exc})") from exc
            if not data:
                raise self.fail("server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def send(self, text: str) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure(CODE_TIMEOUT, "starttls", "STARTTLS dialogue timed out")
        self.sock.settimeout(remaining)
        try:
            self.sock.sendall(text.encode("ascii") + b"\r\n")
        except TimeoutError as exc:
            raise _Failure(CODE_TIMEOUT, "starttls", "STARTTLS dialogue timed out") from exc
        except OSError as exc:
            raise self.fail(f"connection lost ({exc.strerror or exc})") from exc

    def numeric_reply(self) -> tuple[int, list[str]]:
        """An SMTP/FTP reply: ``NNN-text`` continuation lines, then ``NNN text``."""
        lines: list[str] = []
        while True:
            line = self.readline()
            lines.append(line)
            if len(line) < 3 or not line[:3].isdigit():
                if self.protocol == "ftp" and lines and lines[0][3:4] == "-":
                    continue  # FTP allows free text inside a multi-line reply
                raise self.fail(f"unexpected reply {line[:80]!r}")
            if line[3:4] != "-":
                return int(line[:3]), lines

    def finish(self) -> None:
        if self.buf:
            # Bytes after the "go ahead" would be fed into TLS: a broken or
            # hostile server (cf. STARTTLS command injection, CVE-2011-0411).
            raise self.fail("unexpected data after the STARTTLS reply")


def _starttls(sock: socket.socket, protocol: str, deadline: float) -> None:
    """Run the plaintext part of STARTTLS; return when the server expects a ClientHello."""
    io = _Lines(sock, deadline, protocol)
    if protocol == "smtp":
        code, lines = io.numeric_reply()
        if code != 220:
            raise io.fail(f"server refused the session: {lines[-1][:120]}")
        # The EHLO name says nothing about us (privacy): a fixed placeholder.
        io.send("EHLO certman.invalid")
        code, lines = io.numeric_reply()
        if code != 250:
            raise io.fail(f"EHLO rejected: {lines[-1][:120]}")
        if not any(line[4:].strip().upper().startswith("STARTTLS") for line in lines):
            raise io.fail("server does not offer STARTTLS")
        io.send("STARTTLS")
        code, lines = io.numeric_reply()
        if code != 220:
            raise io.fail(f"refused: {lines[-1][:120]}")
    elif protocol == "ftp":
        code, lines = io.numeric_reply()
        if code != 220:
            raise io.fail(f"server refused the session: {lines[-1][:120]}")
        io.send("AUTH TLS")
        code, lines = io.numeric_reply()
        if code != 234:
            raise io.fail(f"refused: {lines[-1][:120]}")
    elif protocol == "imap":
        greeting = io.readline()
        if not greeting.upper().startswith(("* OK", "* PREAUTH")):
            raise io.fail(f"server refused the session: {greeting[:120]}")
        io.send("a1 STARTTLS")
        while True:
            line = io.readline()
            if line.startswith("a1 "):
                break
            if not line.startswith("*"):
                raise io.fail(f"unexpected reply {line[:80]!r}")
        if not line[3:].upper().startswith("OK"):
            raise io.fail(f"refused: {line[:120]}")
    elif protocol == "pop3":
        greeting = io.readline()
        if not greeting.startswith("+OK"):
            raise io.fail(f"server refused the session: {greeting[:120]}")
        io.send("STLS")
        line = io.readline()
        if not line.startswith("+OK"):
            raise io.fail(f"refused: {line[:120]}")
    else:  # pragma: no cover - parse_endpoint rejects unknown protocols
        raise io.fail("unknown protocol")
    io.finish()


def _ssl_reason(exc: SSL.Error) -> str:
    """A short reason from pyOpenSSL's error stack (or the syscall error)."""
    if isinstance(exc, SSL.SysCallError):
        errno, text = (*exc.args, None, None)[:2]
        if errno == -1 or text == "Unexpected EOF":
            return "the server closed the connection during the handshake"
        return f"connection error during the handshake ({text})"
    if isinstance(exc, SSL.ZeroReturnError):
        return "the server closed the connection during the handshake"
    reasons: list[str] = []
    stack = exc.args[0] if exc.args else []
    if isinstance(stack, list):
        for item in stack:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
    return ", ".join(r for r in reasons if r) or str(exc) or exc.__class__.__name__


_NOT_TLS_REASONS: Final = (
    "wrong version number",
    "packet length too long",
    "record layer failure",
    "http request",
    "unknown protocol",
)


def _handshake(
    sock: socket.socket, endpoint: Endpoint, deadline: float
) -> tuple[tuple[bytes, ...], str | None, str | None]:
    sock.setblocking(False)
    conn = SSL.Connection(_client_context(), sock)
    if endpoint.server_name is not None:
        try:
            conn.set_tlsext_host_name(endpoint.server_name.encode("idna"))
        except UnicodeError as exc:
            raise _Failure(CODE_BAD_SPEC, "handshake", f"{endpoint.host}: not a valid IDN") from exc
    conn.set_connect_state()
    try:
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                _wait(sock, write=False, deadline=deadline)
            except SSL.WantWriteError:
                _wait(sock, write=True, deadline=deadline)
            except SSL.Error as exc:
                reason = _ssl_reason(exc)
                # What OpenSSL says when the other side answers in plaintext.
                plaintext = any(m in reason for m in _NOT_TLS_REASONS)
                hint = (
                    " (is this port speaking TLS? see --starttls)"
                    if plaintext and not endpoint.starttls
                    else ""
                )
                raise _Failure(
                    CODE_HANDSHAKE, "handshake", f"TLS handshake failed: {reason}{hint}"
                ) from exc
            except OSError as exc:
                raise _Failure(
                    CODE_HANDSHAKE,
                    "handshake",
                    f"TLS handshake failed: connection error ({exc.strerror or exc})",
                ) from exc
        # OpenSSL's own objects, dumped with i2d (which reproduces the
        # received encoding): no parsing by cryptography here, so a malformed
        # certificate is reported by the inspector, not warned about in a
        # worker thread.
        certs = conn.get_peer_cert_chain() or []
        chain = tuple(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) for cert in certs)
        version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name()
        with contextlib.suppress(SSL.Error, OSError):
            conn.shutdown()  # best effort close_notify; never wait for the reply
        return chain, version, cipher
    finally:
        sock.close()


def fetch_chain(endpoint: Endpoint, *, options: ConnectOptions | None = None) -> EndpointResult:
    """Connect to one endpoint and read the chain it sends. Never raises for network trouble.

    DNS failure, refusal, timeouts, failed handshakes and refused STARTTLS all
    come back as a result with ``error`` set. Thread safe.
    """
    opts = options or ConnectOptions()
    start = time.monotonic()
    spec = endpoint.label
    peer: str | None = None
    try:
        host, port = endpoint.address
        sock = _connect(host, port, start + opts.connect_timeout, opts.resolver)
        try:
            try:
                peer_addr = sock.getpeername()
                peer = _join_host_port(str(peer_addr[0]), int(peer_addr[1]))
            except OSError as exc:
                raise _Failure(
                    CODE_UNREACHABLE, "connect", f"connection lost ({exc.strerror or exc})"
                ) from exc
            deadline = time.monotonic() + opts.handshake_timeout
            if endpoint.starttls:
                _starttls(sock, endpoint.starttls, deadline)
        except BaseException:
            sock.close()
            raise
        chain, version, cipher = _handshake(sock, endpoint, deadline)
        if not chain:
            raise _Failure(CODE_NO_CERTIFICATE, "handshake", "the server sent no certificate")
    except _Failure as failure:
        log.debug("%s: %s", spec, failure.error.message)
        return EndpointResult(
            spec=spec,
            endpoint=endpoint,
            error=failure.error,
            peer=peer,
            elapsed=time.monotonic() - start,
        )
    return EndpointResult(
        spec=spec,
        endpoint=endpoint,
        chain=chain,
        peer=peer,
        tls_version=version,
        cipher=cipher,
        elapsed=time.monotonic() - start,
    )


def _bad_spec_result(spec: str, exc: InspectorError) -> EndpointResult:
    return EndpointResult(
        spec=spec,
        endpoint=None,
        error=EndpointError(code=exc.code, message=exc.message, phase="parse"),
    )


R = TypeVar("R")


T = TypeVar("T")


def bounded_map(
    items: Iterable[T],
    fn: Callable[[T], R],
    *,
    concurrency: int,
    name: str = "certman-worker",
) -> Iterator[R]:
    """``fn(item)`` for each item on ``concurrency`` threads; yield results as they complete.

    Reads ``items`` lazily and keeps at most ``2 * concurrency`` of them
    queued or running (a little beyond the worker count, so no worker idles
    while this generator is suspended in the caller's loop body): the input
    is never read further ahead than that, so memory is flat in the number
    of items. ``fn`` must not raise (turn failures into results). Closing
    the generator cancels what has not started.
    """
    if concurrency < 1:
        raise InspectorError("concurrency must be at least 1", code="endpoint-bad-concurrency")
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
    pending: set[Future[R]] = set()
    limit = concurrency * 2
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.add(pool.submit(fn, item))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Ready(Generic[R]):
    """A result known before any work (a spec that does not parse)."""

    value: R


def _run_bounded(
    items: Iterable[Endpoint | str],
    work: Callable[[Endpoint], R],
    bad_spec: Callable[[str, InspectorError], R],
    *,
    concurrency: int,
    starttls: str | None,
    connect_to: str | None,
) -> Iterator[R]:
    """Parse specs lazily and apply ``work`` to each endpoint (see :func:`bounded_map`)."""

    def prepared() -> Iterator[Endpoint | _Ready[R]]:
        for item in items:
            if isinstance(item, Endpoint):
                yield item
                continue
            try:
                yield parse_endpoint_line(item, starttls=starttls, connect_to=connect_to)
            except InspectorError as exc:
                yield _Ready(bad_spec(item, exc))

    def run(item: Endpoint | _Ready[R]) -> R:
        return item.value if isinstance(item, _Ready) else work(item)

    return bounded_map(prepared(), run, concurrency=concurrency, name="certman-endpoint")


def fetch_chains(
    endpoints: Iterable[Endpoint | str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    options: ConnectOptions | None = None,
    starttls: str | None = "auto",
    connect_to: str | None = None,
    fetch: Callable[[Endpoint, ConnectOptions], EndpointResult] | None = None,
) -> Iterator[EndpointResult]:
    """Read the chains of many endpoints at once; yield results as they complete.

    ``endpoints`` is consumed lazily (a generator over a million-line file is
    fine): at most ``concurrency`` connections are open and at most
    ``concurrency`` more endpoints are parsed and waiting, so memory does not
    grow with the length of the input. Strings are parsed with
    :func:`parse_endpoint_line` using ``starttls`` and ``connect_to``; a
    string that does not parse becomes an ``endpoint-bad-spec`` result.
    Results come out in completion order, one per input item. ``fetch``
    replaces :func:`fetch_chain` (a seam for tests and instrumentation).

    Closing the generator early cancels the endpoints not started yet;
    connections in progress end within their timeouts.
    """
    opts = options or ConnectOptions()
    connect = fetch or (lambda ep, o: fetch_chain(ep, options=o))

    def work(endpoint: Endpoint) -> EndpointResult:
        try:
            return connect(endpoint, opts)
        except Exception as exc:  # a bug must not stop a scan of thousands of hosts
            log.exception("%s: unexpected error", endpoint.label)
            return EndpointResult(
                spec=endpoint.label,
                endpoint=endpoint,
                error=EndpointError(CODE_INTERNAL, f"internal error: {exc!r}", "internal"),
            )

    return _run_bounded(
        endpoints,
        work,
        _bad_spec_result,
        concurrency=concurrency,
        starttls=starttls,
        connect_to=connect_to,
    )


# ---------------------------------------------------------------------------
# Inspecting what endpoints send
# ---------------------------------------------------------------------------


def inspect_endpoint(
    endpoint: Endpoint,
    *,
    now: dt.datetime,
    options: InspectOptions | None = None,
    connect: ConnectOptions | None = None,
    fetcher: AiaFetcher | None = None,
) -> ScanResult:
    """Connect, read the chain as sent and inspect it, with ``host`` = the endpoint's name.

    So ``hostname-mismatch`` fires for a certificate that does not cover the
    name asked for (SNI). With a ``fetcher`` (the user's explicit opt-in),
    a missing intermediate is looked up over AIA (see
    :func:`certman.inspector.aia.inspect_with_fetching`). Never raises for
    network trouble or bad chains: failures are error results.
    """
    label = endpoint.label
    got = fetch_chain(endpoint, options=connect)
    if got.error is not None:
        return ScanResult(source=label, error=got.error.message, error_code=got.error.code)
    try:
        with INSPECT_LOCK:
            bundle = load_ders(got.chain, source=label)
        if fetcher is not None:
            report = inspect_with_fetching(
                bundle, fetcher=fetcher, now=now, host=endpoint.host, options=options
            )
        else:
            with INSPECT_LOCK:
                report = inspect(bundle, now=now, host=endpoint.host, options=options)
    except InspectorError as exc:
        return ScanResult(source=label, error=exc.message, error_code=exc.code)
    return ScanResult(source=label, report=report)


def scan_endpoints(
    endpoints: Iterable[Endpoint | str],
    *,
    now: dt.datetime | None = None,
    options: InspectOptions | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    connect: ConnectOptions | None = None,
    starttls: str | None = "auto",
    connect_to: str | None = None,
    fetcher: AiaFetcher | None = None,
) -> Iterator[ScanResult]:
    """Inspect what many live endpoints send; yield one result per endpoint as it completes.

    The fleet-scan counterpart of :func:`certman.scan` for live hosts:
    ``endpoints`` (specs or :class:`Endpoint` objects, read lazily) are
    handled by ``concurrency`` threads, each connecting and inspecting, with
    the same flat-memory bounds as :func:`fetch_chains`. Every result's
    ``source`` is the endpoint's label; unreachable endpoints and bad specs
    are error results with the codes listed in ``ERROR_CODES``.

    ``fetcher`` is the opt-in to AIA fetching: without it nothing but the
    endpoints themselves (and DNS) is contacted.
    """
    when = utc_now(now)
    opts = options or InspectOptions()
    conn = connect or ConnectOptions()
    trust_store_for(opts.trust_store)  # load once, before the threads race for it

    def work(endpoint: Endpoint) -> ScanResult:
        try:
            return inspect_endpoint(endpoint, now=when, options=opts, connect=conn, fetcher=fetcher)
        except Exception as exc:  # a bug must not stop a scan of thousands of hosts
            log.exception("%s: unexpected error", endpoint.label)
            return ScanResult(
                source=endpoint.label, error=f"internal error: {exc!r}", error_code=CODE_INTERNAL
            )

    def bad_spec(spec: str, exc: InspectorError) -> ScanResult:
        return ScanResult(source=spec, error=exc.message, error_code=exc.code)

    return _run_bounded(
        endpoints,
        work,
        bad_spec,
        concurrency=concurrency,
        starttls=starttls,
        connect_to=connect_to,
    )


@dataclass(frozen=True)
class EndpointSource:
    """A live endpoint as a :class:`certman.inspector.sources.Source` plug-in.

    For mixing endpoints into :func:`certman.scan` (which reads sources in
    worker processes, one at a time per worker); for many endpoints,
    :func:`scan_endpoints` is much faster (``concurrency`` connections at
    once). Picklable. ``read()`` raises :class:`InspectorError` with the
    endpoint error code when no chain was received.
    """

    endpoint: Endpoint
    options: ConnectOptions = ConnectOptions()

    @property
    def id(self) -> str:
        return self.endpoint.label

    def read(self) -> RawChain:
        from certman.inspector.sources import RawChain

        got = fetch_chain(self.endpoint, options=self.options)
        if got.error is not None:
            raise InspectorError(got.error.message, code=got.error.code, source=self.id)
        return RawChain(ders=got.chain, host=self.endpoint.host)


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "ERROR_CODES",
    "SCHEMES",
    "STARTTLS_BY_PORT",
    "STARTTLS_PROTOCOLS",
    "ConnectOptions",
    "Endpoint",
    "EndpointError",
    "EndpointResult",
    "EndpointSource",
    "bounded_map",
    "fetch_chain",
    "fetch_chains",
    "inspect_endpoint",
    "iter_endpoint_lines",
    "looks_like_endpoint",
    "parse_connect_to",
    "parse_endpoint",
    "parse_endpoint_line",
    "scan_endpoints",
]
