"""A standalone HTTP-01 responder and the solver that runs it for an order.

Why not ``http.server``: the responder faces the whole internet (the CA
validates from several vantage points, anyone else can connect too) and it
only has to answer one kind of request. A small purpose-built loop gives
hard limits that ``http.server`` does not: a bounded request line and
header block, a bounded number of headers, one *overall* deadline per
connection (a per-``recv`` timeout does not stop a slowloris client that
sends a byte every few seconds), a cap on concurrent connections, exactly
one request per connection, and no file system access at all.

It answers ``GET`` (and ``HEAD``) of ``/.well-known/acme-challenge/<token>``
when the token is in its :class:`~certman.challenges.http01.TokenStore` with
``200 text/plain`` and the key authorization; everything else gets 404
(unknown path or token), 405 (another method), 400/408/414/431/505 (bad or
slow or oversized requests) or 503 (too many connections).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from certman.challenges.base import ChallengeTask
from certman.challenges.http01 import (
    MemoryTokenStore,
    TokenStore,
    _require_http01,
    is_valid_token,
    token_from_path,
    validate_token,
)
from certman.errors import ChallengeError, ConfigError

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _Reject(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _bind_error(exc: OSError, host: str, port: int) -> ChallengeError:
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ChallengeError(
            f"cannot listen on {where} for HTTP-01: the port is already in use "
            "(stop the web server there, or use the webroot solver or the WSGI "
            "middleware in it instead)",
            code="challenge-port-in-use",
            host=host,
            port=port,
        )
    if exc.errno == errno.EACCES:
        return ChallengeError(
            f"cannot listen on {where} for HTTP-01: permission denied "
            "(ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            code="challenge-port-denied",
            host=host,
            port=port,
        )
    return ChallengeError(
        f"cannot listen on {where} for HTTP-01: {exc.strerror or exc}",
        code="challenge-bind-failed",
        host=host,
        port=port,
    )


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """Bind a listening socket; ``""`` / ``"::"`` means every address, IPv6 and IPv4."""
    candidates: list[tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]]
    if host in ("", "::"):
        candidates = [(socket.AF_INET6, ("::", port, 0, 0))] if socket.has_ipv6 else []
        candidates.append((socket.AF_INET, ("0.0.0.0", port)))  # noqa: S104 - asked for all
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ChallengeError(
                f"cannot listen on {host}:{port} for HTTP-01: unknown address ({exc.strerror})",
                code="challenge-bind-failed",
                host=host,
                port=port,
            ) from exc
        candidates = [(info[0], info[4]) for info in infos[:1]]  # type: ignore[misc]
    last: OSError | None = None
    for family, addr in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # e.g. IPv6 disabled in the kernel: try IPv4
            last = exc
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host in ("", "::"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE or family == candidates[-1][0]:
                raise _bind_error(exc, host, port) from exc
            last = exc
            continue
        return sock
    assert last is not None
    raise _bind_error(last, host, port) from last


def parse_listen_address(spec: str, default_port: int = 80) -> tuple[str, int]:
    """Parse ``--listen``: ``HOST:PORT``, ``[V6]:PORT``, ``HOST``, ``:PORT`` or ``PORT``.

    ``""`` as host means every address (IPv6 and IPv4). Raises
    ``ConfigError`` code ``"config-bad-listen"`` for anything else.
    """
    text = spec.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end >= 0 else ""
        if end < 0 or (rest and not rest.startswith(":")):
            raise _bad_listen(spec)
        host, port_text = text[1:end], (rest[1:] if rest else None)
    elif text.isdigit():
        host, port_text = "", text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    # else: a host name, an IPv4 address, or a bare IPv6 address without a port
    if port_text is None:
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise _bad_listen(spec)
    if host == "*":
        host = ""
    return host, port


def _bad_listen(spec: str) -> ConfigError:
    return ConfigError(
        f"invalid listen address {spec!r}: use HOST:PORT, [IPV6]:PORT, HOST, :PORT or PORT",
        code="config-bad-listen",
    )


class HTTP01Server:
    """A threaded HTTP-01 responder reading key authorizations from a TokenStore.

    ``host``: ``""`` (default) listens on every address, IPv6 and IPv4;
    ``"127.0.0.1"``, ``"::1"``, a host name or any address binds just that.
    ``port=0`` picks a free port; :attr:`port` tells which after
    :meth:`start`. Limits: ``connection_timeout`` is the whole time a client
    gets to send its request (then 408 and close); ``max_connections``
    concurrent connections (more get 503 and are closed at once);
    ``max_request_line`` / ``max_header_bytes`` / ``max_headers`` bound the
    request (414 / 431).

    Use as a context manager or call :meth:`start` / :meth:`stop`. Start and
    stop are thread safe; the token store can be changed while it runs.
    """

    def __init__(
        self,
        tokens: TokenStore | None = None,
        host: str = "",
        port: int = 80,
        *,
        connection_timeout: float = 10.0,
        max_connections: int = 64,
        max_request_line: int = 2048,
        max_header_bytes: int = 8192,
        max_headers: int = 32,
    ) -> None:
        self.tokens: TokenStore = tokens if tokens is not None else MemoryTokenStore()
        self.host = host
        self.requested_port = port
        self.connection_timeout = connection_timeout
        self.max_connections = max_connections
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        self._port = 0

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._sock is not None

    @property
    def port(self) -> int:
        """The bound port (meaningful once started; resolves ``port=0``)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound."""
        if self._sock is None:
            return (self.host, self.requested_port)
        addr = self._sock.getsockname()
        return (str(addr[0]), int(addr[1]))

    def start(self) -> None:
        """Bind and start answering; raises ``ChallengeError`` (e.g. ``challenge-port-in-use``)."""
        with self._lock:
            if self._sock is not None:
                return
            sock = _listen(self.host, self.requested_port, min(self.max_connections, 128))
            sock.setblocking(False)
            self._sock = sock
            self._port = int(sock.getsockname()[1])
            self._wake_r, self._wake_w = socket.socketpair()
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._serve, name=f"certman-http01:{self._port}", daemon=True
            )
            self._thread.start()
        log.info("HTTP-01 responder listening on %s port %d", self.host or "*", self._port)

    def stop(self) -> None:
        """Stop accepting, cut open connections, wait for the threads; idempotent."""
        with self._lock:
            if self._sock is None:
                return
            self._stopping.set()
            assert self._wake_w is not None
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            if self._thread is not None:
                self._thread.join()
            self._sock.close()
            for s in (self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            self._sock = self._thread = self._wake_r = self._wake_w = None
            with self._conns_lock:
                conns = list(self._conns.items())
            for conn, _ in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for _, thread in conns:
                thread.join(timeout=5)
        log.info("HTTP-01 responder on port %d stopped", self._port)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None and self._wake_r is not None
        # Refused connections (over the cap) are drained here, in the accept
        # loop, for a moment after the 503: closing a socket with unread
        # request bytes sends a RST that can destroy the 503 on the client.
        draining: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    events = sel.select(timeout=0.25 if draining else None)
                    for key, _ in events:
                        if key.fileobj is self._wake_r:
                            return
                        if key.fileobj is self._sock:
                            self._accept(sel, draining)
                            continue
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        try:
                            done = not conn.recv(4096)
                        except OSError:
                            done = True
                        if done:
                            sel.unregister(conn)
                            conn.close()
                            draining.pop(conn, None)
                    now = time.monotonic()
                    for conn, until in list(draining.items()):
                        if until <= now:
                            sel.unregister(conn)
                            conn.close()
                            del draining[conn]
            finally:
                for conn in draining:
                    conn.close()

    def _accept(self, sel: selectors.BaseSelector, draining: dict[socket.socket, float]) -> None:
        assert self._sock is not None
        try:
            conn, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. EMFILE: keep serving the others
            log.warning("HTTP-01 responder: accept failed: %s", exc)
            time.sleep(0.05)
            return
        with self._conns_lock:
            busy = len(self._conns) >= self.max_connections
            if not busy:
                thread = threading.Thread(
                    target=self._handle, args=(conn, peer), name="certman-http01-conn", daemon=True
                )
                self._conns[conn] = thread
        if not busy:
            thread.start()
            return
        log.warning("HTTP-01 responder: too many connections, refusing %s", peer)
        try:
            conn.setblocking(False)
            conn.send(self._response(503, b"busy\n", head=False))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if len(draining) >= 256:
            conn.close()
            return
        draining[conn] = time.monotonic() + 1.0
        sel.register(conn, selectors.EVENT_READ)

    def _handle(self, conn: socket.socket, peer: object) -> None:
        deadline = time.monotonic() + self.connection_timeout
        try:
            conn.setblocking(True)
            try:
                status, body, head = self._answer(conn, deadline, peer)
            except _Reject as rej:
                status, body, head = rej.status, f"{_REASONS[rej.status]}\n".encode(), False
            except _Closed:
                return
            conn.settimeout(max(deadline - time.monotonic(), 1.0))
            conn.sendall(self._response(status, body, head=head))
            # Half-close and drain briefly so unread request bytes do not turn
            # our close into a RST that would eat the response on the client.
            conn.shutdown(socket.SHUT_WR)
            drain_until = time.monotonic() + 0.5
            while (left := drain_until - time.monotonic()) > 0:
                conn.settimeout(left)
                if not conn.recv(65536):
                    break
        except OSError:
            pass
        finally:
            conn.close()
            with self._conns_lock:
                self._conns.pop(conn, None)

    def _read_head(self, conn: socket.socket, deadline: float) -> bytes:
        buf = bytearray()
        limit = self.max_request_line + self.max_header_bytes
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                end = buf.find(b"\n\n")
            if end >= 0:
                return bytes(buf[:end])
            first_nl = buf.find(b"\n")
            if (first_nl < 0 and len(buf) > self.max_request_line) or (
                first_nl > self.max_request_line
            ):
                raise _Reject(414)
            if len(buf) > limit:
                raise _Reject(431)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Reject(408)
            conn.settimeout(remaining)
            try:
                data = conn.recv(4096)
            except TimeoutError:
                raise _Reject(408) from None
            if not data:
                raise _Closed
            buf += data

    def _answer(
        self, conn: socket.socket, deadline: float, peer: object
    ) -> tuple[int, bytes, bool]:
        head = self._read_head(conn, deadline)
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        request_line = lines[0]
        if len(request_line) > self.max_request_line:
            raise _Reject(414)
        headers = lines[1:]
        if len(headers) > self.max_headers:
            raise _Reject(431)
        if len(head) - len(request_line) > self.max_header_bytes:
            raise _Reject(431)
        for header in headers:
            if b":" not in header or header[:1] in (b" ", b"\t"):
                raise _Reject(400)
        try:
            method, target, version = request_line.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400) from None
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _Reject(505 if version.startswith("HTTP/") else 400)
        if method not in ("GET", "HEAD"):
            log.debug("HTTP-01 responder: %s %s from %s -> 405", method, target[:80], peer)
            return 405, b"Method Not Allowed\n", False
        path = target
        for scheme in ("http://", "https://"):  # absolute-form, as a proxy would send
            if path.lower().startswith(scheme):
                rest = path[len(scheme) :]
                path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        path = path.split("?", 1)[0]
        token = token_from_path(path)
        value = self.tokens.get(token) if token is not None else None
        if token is None or value is None:
            log.debug("HTTP-01 responder: %s %s from %s -> 404", method, target[:80], peer)
            return 404, b"Not Found\n", method == "HEAD"
        log.info("HTTP-01 responder: answered token %s for %s", token, peer)
        log.debug("HTTP-01 responder: key authorization for %s is %s", token, value)
        return 200, value.encode("ascii", "replace"), method == "HEAD"

    @staticmethod
    def _response(status: int, body: bytes, *, head: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            "Content-Type: text/plain",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if status == 405:
            lines.append("Allow: GET, HEAD")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


class _Closed(Exception):
    """The client went away before sending a whole request."""


class StandaloneSolver:
    """Answers HTTP-01 by running an :class:`HTTP01Server` while tokens are out.

    The server starts on the first :meth:`present` and stops when the last
    token is cleaned up, so it holds the port only for the duration of an
    order. Used as a context manager it stays up for the whole block (issue
    many certificates concurrently through one listener). Thread safe: any
    number of concurrent orders can share one instance (and must, since only
    one process can bind the port).

    ``host``, ``port``, ``connection_timeout`` and ``max_connections`` are
    passed to :class:`HTTP01Server`; a busy port raises ``ChallengeError``
    code ``"challenge-port-in-use"`` from :meth:`present` (or on entering the
    ``with`` block).
    """

    challenge_types: tuple[str, ...] = ("http-01",)

    def __init__(
        self,
        host: str = "",
        port: int = 80,
        *,
        connection_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._tokens = MemoryTokenStore()
        self.server = HTTP01Server(
            self._tokens,
            host,
            port,
            connection_timeout=connection_timeout,
            max_connections=max_connections,
        )
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._held = 0

    @property
    def port(self) -> int:
        """The bound port while running (useful with ``port=0`` in tests)."""
        return self.server.port

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            _require_http01(task)
            validate_token(task.token)
        with self._lock:
            self.server.start()
            for task in tasks:
                self._tokens.put(task.token, task.validation)
                self._live.add(task.token)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._lock:
            for task in tasks:
                if is_valid_token(task.token):
                    self._tokens.delete(task.token)
                    self._live.discard(task.token)
            if not self._live and not self._held:
                self.server.stop()

    def __enter__(self) -> Self:
        with self._lock:
            self.server.start()
            self._held += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._held -= 1
            if not self._held and not self._live:
                self.server.stop()
