"""A standalone HTTP-01 responder and the solver that runs it for an order.

Why not ``http.server``: the responder faces the whole internet (the CA
validates from several vantage points, and anyone else can connect too), and
it only has to answer one kind of request. A small purpose-built loop gives
hard limits that ``http.server`` lacks: a bounded request line and header
block, a bounded number of headers, one *overall* deadline per connection (a
per-``recv`` timeout does not stop a slowloris client that sends a byte every
few seconds), exactly one request per connection, and no file system access.

It is one selector loop in one thread, not a thread per connection: idle
connections cost a buffer each, and when ``max_connections`` are open the
oldest is closed to admit the newest, so a flood of idle clients can delay
the CA's request by at most one round of evictions instead of locking it out
until their timeouts expire.

It answers ``GET`` (and ``HEAD``) of ``/.well-known/acme-challenge/<token>``
when the token is in its :class:`~certman.challenges.http01.TokenStore` with
``200 text/plain`` and the key authorization; everything else gets 404
(unknown path or token), 405 (another method), 400/408/414/431/505 (bad,
slow or oversized requests), or 503 (closed to make room for a newer
connection).
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
    """Answer with this error status instead of parsing further."""

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


def parse_listen_address(spec: str, default_port: int | None = 80) -> tuple[str, int]:
    """Parse ``--listen``: ``HOST:PORT``, ``[V6]:PORT``, ``HOST``, ``:PORT`` or ``PORT``.

    ``""`` as host means every address (IPv6 and IPv4). With
    ``default_port=None`` the port is required (no bare ``HOST``). Raises
    ``ConfigError`` code ``"config-bad-listen"`` for anything else.
    """
    text = spec.strip()
    host, port_text = text, None
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end >= 0 else ""
        if end < 0 or (rest and not rest.startswith(":")):
            raise _bad_listen(spec)
        host, port_text = text[1:end], (rest[1:] if rest else None)
    elif text.isdecimal():
        host, port_text = "", text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    # else: a host name, an IPv4 address, or a bare IPv6 address without a port
    if port_text is None:
        if default_port is None:
            raise _bad_listen(spec)
        port = default_port
    elif port_text.isdecimal() and int(port_text) <= 65535:
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


class _Conn:
    """One client connection still sending its request head."""

    __slots__ = ("buf", "deadline", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: object, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.buf = bytearray()


_DRAIN = object()  # selector data marking a connection that is only being drained
_DRAIN_SECONDS = 0.5
_ACCEPTS_PER_EVENT = 64


class HTTP01Server:
    """An HTTP-01 responder reading key authorizations from a TokenStore.

    ``host``: ``""`` (default) listens on every address, IPv6 and IPv4;
    ``"127.0.0.1"``, ``"::1"``, a host name or any address binds just that.
    ``port=0`` picks a free port; :attr:`port` tells which after
    :meth:`start`.

    One thread runs a selector loop over every connection: an idle or slow
    client costs a socket and a small buffer, never a thread, so thousands
    of them cannot starve the CA's request. Limits:

    - ``connection_timeout``: the whole time a client gets to send its
      request head (then 408 and close), however it trickles bytes;
    - ``max_connections``: connections still sending their request; when
      full, the *oldest* of them is closed (503) to admit the new one, so
      holding connections open cannot lock the CA out;
    - ``max_request_line`` / ``max_header_bytes`` / ``max_headers``: bound
      the request (414 / 431); nothing beyond them is buffered.

    Each connection carries one request and gets ``Connection: close``.
    The token store's ``get`` is called from the loop thread, so it should be
    quick (every certman store is). Use as a context manager or call
    :meth:`start` / :meth:`stop`; both are thread safe, and the token store
    can be changed while the server runs.
    """

    def __init__(
        self,
        tokens: TokenStore | None = None,
        host: str = "",
        port: int = 80,
        *,
        connection_timeout: float = 10.0,
        max_connections: int = 512,
        max_request_line: int = 2048,
        max_header_bytes: int = 8192,
        max_headers: int = 32,
    ) -> None:
        self.tokens: TokenStore = tokens if tokens is not None else MemoryTokenStore()
        self.host = host
        self.requested_port = port
        self.connection_timeout = connection_timeout
        self.max_connections = max(1, max_connections)
        self.max_draining = max(16, self.max_connections // 4)
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._port = 0
        self._last_busy_warning = 0.0
        self.evicted = 0  # connections closed to make room (a sign of a flood)

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
            sock = _listen(self.host, self.requested_port, 128)
            sock.setblocking(False)
            self._sock = sock
            self._port = int(sock.getsockname()[1])
            self._wake_r, self._wake_w = socket.socketpair()
            self._thread = threading.Thread(
                target=self._serve,
                args=(sock, self._wake_r),
                name=f"certman-http01:{self._port}",
                daemon=True,
            )
            self._thread.start()
        log.info("HTTP-01 responder listening on %s port %d", self.host or "*", self._port)

    def stop(self) -> None:
        """Stop accepting, close every connection, wait for the loop; idempotent."""
        with self._lock:
            if self._sock is None:
                return
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

    # -- the loop ------------------------------------------------------------

    def _serve(self, listener: socket.socket, wake: socket.socket) -> None:
        # Both dicts are kept in deadline order (insertion order, fixed
        # timeouts), so expiry and eviction only ever look at the front.
        active: dict[socket.socket, _Conn] = {}
        draining: dict[socket.socket, float] = {}
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        sel.register(wake, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select(self._timeout(active, draining)):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is wake:
                        return
                    if sock is listener:
                        self._accept(sel, listener, active, draining)
                    elif key.data is _DRAIN:
                        self._drain(sel, sock, draining)
                    elif sock in active:
                        self._read(sel, active[sock], active, draining)
                self._expire(sel, active, draining)
        except Exception:  # never die silently with the port still bound
            log.exception("HTTP-01 responder loop failed")
            raise
        finally:
            for sock in [*active, *draining]:
                sock.close()
            sel.close()

    @staticmethod
    def _timeout(
        active: dict[socket.socket, _Conn], draining: dict[socket.socket, float]
    ) -> float | None:
        firsts = []
        if active:
            firsts.append(next(iter(active.values())).deadline)
        if draining:
            firsts.append(next(iter(draining.values())))
        if not firsts:
            return None
        return max(0.0, min(firsts) - time.monotonic())

    def _accept(
        self,
        sel: selectors.BaseSelector,
        listener: socket.socket,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and active:
                    # Out of descriptors: give the oldest one back and retry.
                    self._evict(sel, active, draining)
                    continue
                log.warning("HTTP-01 responder: accept failed: %s", exc)
                return
            sock.setblocking(False)
            if len(active) >= self.max_connections:
                self._evict(sel, active, draining)
            conn = _Conn(sock, peer, time.monotonic() + self.connection_timeout)
            active[sock] = conn
            sel.register(sock, selectors.EVENT_READ, conn)

    def _evict(
        self,
        sel: selectors.BaseSelector,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        oldest = next(iter(active.values()))
        self.evicted += 1
        now = time.monotonic()
        if now - self._last_busy_warning > 10:
            self._last_busy_warning = now
            log.warning(
                "HTTP-01 responder: %d connections open, closing the oldest "
                "(a flood of idle clients?)",
                len(active),
            )
        self._respond(sel, oldest, 503, b"busy\n", False, active, draining)

    def _read(
        self,
        sel: selectors.BaseSelector,
        conn: _Conn,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before sending a whole request
            self._close(sel, conn.sock, active, draining)
            return
        conn.buf += data
        try:
            head = self._head(conn.buf)
            if head is None:
                return
            status, body, head_only = self._answer(head, conn.peer)
        except _Reject as rej:
            status, body, head_only = rej.status, f"{_REASONS[rej.status]}\n".encode(), False
        self._respond(sel, conn, status, body, head_only, active, draining)

    def _expire(
        self,
        sel: selectors.BaseSelector,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        now = time.monotonic()
        while active:
            conn = next(iter(active.values()))
            if conn.deadline > now:
                break
            self._respond(sel, conn, 408, b"Request Timeout\n", False, active, draining)
        while draining:
            sock, until = next(iter(draining.items()))
            if until > now:
                break
            self._close(sel, sock, active, draining)

    def _respond(
        self,
        sel: selectors.BaseSelector,
        conn: _Conn,
        status: int,
        body: bytes,
        head_only: bool,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        """Send the whole (small) response at once, then half-close and drain.

        Responses are a few hundred bytes and the socket's send buffer is
        empty, so one non-blocking ``send`` takes it all; a client that will
        not even accept that is simply dropped. Draining for a moment after
        the half-close matters: closing with unread request bytes makes the
        kernel send a RST, which can destroy the response on the client.
        """
        sock = conn.sock
        del active[sock]
        conn.buf = bytearray()
        try:
            data = self._response(status, body, head=head_only)
            if sock.send(data) != len(data):
                raise OSError("short send")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sel.unregister(sock)
            sock.close()
            return
        if len(draining) >= self.max_draining:
            sel.unregister(sock)
            sock.close()
            return
        sel.modify(sock, selectors.EVENT_READ, _DRAIN)
        draining[sock] = time.monotonic() + _DRAIN_SECONDS

    def _drain(
        self, sel: selectors.BaseSelector, sock: socket.socket, draining: dict[socket.socket, float]
    ) -> None:
        try:
            if sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(sel, sock, {}, draining)

    @staticmethod
    def _close(
        sel: selectors.BaseSelector,
        sock: socket.socket,
        active: dict[socket.socket, _Conn],
        draining: dict[socket.socket, float],
    ) -> None:
        active.pop(sock, None)
        draining.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()

    # -- HTTP ------------------------------------------------------------------

    def _head(self, buf: bytearray) -> bytes | None:
        """The request head once complete, ``None`` while incomplete; ``_Reject`` on limits."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            end = buf.find(b"\n\n")
        first_nl = buf.find(b"\n")
        if (first_nl < 0 and len(buf) > self.max_request_line) or (
            first_nl > self.max_request_line
        ):
            raise _Reject(414)
        if end >= 0:
            return bytes(buf[:end])
        if len(buf) > self.max_request_line + self.max_header_bytes:
            raise _Reject(431)
        return None

    def _answer(self, head: bytes, peer: object) -> tuple[int, bytes, bool]:
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
        max_connections: int = 512,
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
