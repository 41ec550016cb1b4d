"""Real loopback servers and a throwaway PKI for the endpoint, AIA and repair tests.

Everything is made at test time with ``cryptography`` (EC P-256: fast) and
served by real sockets on 127.0.0.1 / ::1: pyOpenSSL TLS servers that send
exactly the chain they are given (in that order), STARTTLS servers for SMTP,
IMAP, POP3 and FTP, servers that misbehave on purpose, and a plain HTTP
server for AIA ``caIssuers`` URLs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from OpenSSL import SSL

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str, org: str = "Certman Test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_cert(
    cn: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    names: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    aia_url: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    org: str = "Certman Test",
) -> Issued:
    """A certificate; self-signed when ``issuer`` is None."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn, org)
    issuer_name = issuer.cert.subject if issuer else subject
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 60 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if names:
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                import ipaddress

                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if aia_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(aia_url),
                    )
                ]
            ),
            critical=False,
        )
    cert = builder.sign(signing_key, hashes.SHA256())
    return Issued(cert, key)


@dataclass
class Pki:
    """root -> intermediate -> leaf (for ``localhost``, ``127.0.0.1`` and ``::1``)."""

    root: Issued
    intermediate: Issued
    leaf: Issued

    @classmethod
    def make(cls, *, aia_url: str | None = None, names: Sequence[str] = ()) -> Pki:
        root = make_cert("Certman Test Root", ca=True, not_after=NOW + 3650 * DAY)
        inter = make_cert(
            "Certman Test Intermediate", issuer=root, ca=True, not_after=NOW + 900 * DAY
        )
        leaf = make_cert(
            "localhost",
            issuer=inter,
            names=names or ("localhost", "127.0.0.1", "::1"),
            aia_url=aia_url,
        )
        return cls(root, inter, leaf)


# ---------------------------------------------------------------------------
# TLS and STARTTLS servers
# ---------------------------------------------------------------------------

STARTTLS_GREETING = {
    "smtp": b"220 mail.test ESMTP ready\r\n",
    "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
    "pop3": b"+OK POP3 ready\r\n",
    "ftp": b"220-Welcome to the test FTP server\r\n220 ready\r\n",
}


@dataclass
class TlsServer:
    """A real TLS server on loopback that sends ``chain`` exactly in the given order.

    ``mode``: ``tls`` (normal), ``silent`` (accepts, never speaks),
    ``http`` (answers like a plain HTTP server), ``close`` (hangs up at once).
    ``starttls``: run this protocol's plaintext dialogue first;
    ``starttls_reply``: ``ok``, ``refuse`` (negative reply) or ``no-offer``
    (SMTP without STARTTLS in EHLO).
    """

    chain: Sequence[x509.Certificate] = ()
    key: Any = None
    mode: str = "tls"
    starttls: str | None = None
    starttls_reply: str = "ok"
    host: str = "127.0.0.1"
    ciphers: bytes | None = None
    max_version: int | None = None
    sni_seen: list[str | None] = field(default_factory=list)
    commands_seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.ctx: SSL.Context | None = None
        if self.chain:
            assert self.key is not None
            ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
            if self.ciphers is not None:
                ctx.set_cipher_list(self.ciphers)
            if self.max_version is not None:
                ctx.set_min_proto_version(SSL.TLS1_VERSION)
                ctx.set_max_proto_version(self.max_version)
            ctx.use_certificate(self.chain[0])
            ctx.use_privatekey(self.key)
            for extra in self.chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.set_tlsext_servername_callback(self._on_sni)
            self.ctx = ctx
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _on_sni(self, conn: SSL.Connection) -> None:
        name = conn.get_servername()
        self.sni_seen.append(name.decode() if name else None)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _readline(self, conn: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        line = data.decode().rstrip("\r\n")
        self.commands_seen.append(line)
        return line

    def _dialogue(self, conn: socket.socket) -> bool:
        proto = self.starttls
        assert proto is not None
        conn.sendall(STARTTLS_GREETING[proto])
        refuse = self.starttls_reply == "refuse"
        if proto == "smtp":
            self._readline(conn)  # EHLO
            if self.starttls_reply == "no-offer":
                conn.sendall(b"250-mail.test\r\n250 PIPELINING\r\n")
                return False
            conn.sendall(b"250-mail.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            self._readline(conn)  # STARTTLS
            conn.sendall(
                b"454 4.7.0 TLS not available\r\n" if refuse else b"220 2.0.0 go ahead\r\n"
            )
        elif proto == "imap":
            tag = self._readline(conn).split()[0]
            reply = f"{tag} NO STARTTLS disabled\r\n" if refuse else f"{tag} OK Begin TLS\r\n"
            conn.sendall(reply.encode())
        elif proto == "pop3":
            self._readline(conn)
            conn.sendall(b"-ERR not now\r\n" if refuse else b"+OK begin TLS\r\n")
        elif proto == "ftp":
            self._readline(conn)
            conn.sendall(b"534 no TLS here\r\n" if refuse else b"234 AUTH TLS ok\r\n")
        return not refuse

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.mode == "silent":
                self.stop.wait(30)
                return
            if self.mode == "close":
                return
            if self.mode == "http":
                conn.settimeout(5)
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            conn.settimeout(10)
            if self.starttls and not self._dialogue(conn):
                conn.recv(1024)  # wait for the client to give up
                return
            assert self.ctx is not None
            conn.settimeout(None)
            tls = SSL.Connection(self.ctx, conn)
            tls.set_accept_state()
            tls.do_handshake()
            with contextlib.suppress(SSL.Error):
                tls.recv(1)  # until the client closes
        except (OSError, SSL.Error, ConnectionError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(5)


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# ---------------------------------------------------------------------------
# AIA HTTP server
# ---------------------------------------------------------------------------


class AiaServer:
    """A plain HTTP server on loopback serving fixed bodies by path; counts requests.

    ``block`` paths wait on ``release`` before answering (to test time
    limits without sleeping); ``no_length`` paths omit Content-Length; a
    route whose type is ``redirect`` answers 302 to its body.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.block: set[str] = set()
        self.no_length: set[str] = set()
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in server.block:
                    server.release.wait(10)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                ctype, body = route
                if ctype == "redirect":
                    self.send_response(302)
                    self.send_header("Location", body.decode())
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                if self.path in server.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
