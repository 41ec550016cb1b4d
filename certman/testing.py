"""A real, local ACME CA for tests: :class:`LocalPebble`.

``LocalPebble`` runs Let's Encrypt's test CA, Pebble, together with its
companion ``pebble-challtestsrv`` (used here only as Pebble's DNS server),
on free loopback ports, with a TLS certificate generated for the occasion::

    from certman.testing import LocalPebble

    with LocalPebble() as pebble:
        # pebble.directory_url  -> https://127.0.0.1:<port>/dir
        # pebble.ca_bundle      -> PEM file that verifies Pebble's HTTPS API
        # pebble.http_port      -> where your HTTP-01 responder must listen
        ...

Every name resolves to 127.0.0.1 through challtestsrv, so Pebble validates
HTTP-01 by connecting to ``127.0.0.1:<http_port>`` whatever the name is.
DNS-01 records are set with :meth:`LocalPebble.set_txt`.

Pebble 2.4.0 has no ARI (RFC 9773): :class:`AriServer` is a local
renewalInfo endpoint that can also serve Pebble's directory with
``renewalInfo`` added, so ARI-driven renewals run against the real Pebble.

By default Pebble keeps its chaos on purpose (5% of nonces rejected, 50% of
authorizations reused), because real clients must cope with both; only the
random validation delay is switched off (``PEBBLE_VA_NOSLEEP=1``).

This module needs the ``pebble`` and ``pebble-challtestsrv`` binaries
(Debian package ``pebble``); without them :class:`LocalPebble` raises
``CertmanError`` with code ``"pebble-missing"``. It uses only the standard
library and ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certman.errors import CertmanError

__all__ = ["AriAnswer", "AriRequest", "AriServer", "LocalPebble"]

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 for both TCP and UDP (DNS needs both).

    All probe sockets stay open until every port is chosen, so the ports are
    distinct; another process could still take one before Pebble binds it,
    which :meth:`LocalPebble.start` handles by retrying with new ports.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _write_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """Make a throw-away CA and a localhost/127.0.0.1/::1 server certificate.

    Returns (ca_bundle, server_cert, server_key). The CA key is never written.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certman LocalPebble test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "server-cert.pem"
    key_path = directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path, cert_path, key_path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalPebble:
    """Pebble + pebble-challtestsrv on free loopback ports, as a context manager.

    Constructor knobs (all optional):

    - ``nonce_reject``: percentage of valid nonces Pebble rejects as
      ``badNonce`` (Pebble's default, 5, when ``None``).
    - ``authz_reuse``: percentage of new orders that reuse a valid
      authorization (Pebble's default, 50, when ``None``).
    - ``chain_length``: ``PEBBLE_CHAIN_LENGTH`` (1 = leaf + one intermediate).
    - ``alternate_roots``: ``PEBBLE_ALTERNATE_ROOTS`` (extra chains offered
      with ``Link: rel="alternate"``).
    - ``va_nosleep``: ``PEBBLE_VA_NOSLEEP`` (default on: no random
      validation delay).
    - ``env``: any further environment for Pebble, applied last.
    - ``eab_keys``: ``{key_id: base64url_hmac_key}``; when given, Pebble
      requires External Account Binding for new accounts.
    - ``validity_period``: certificate lifetime in seconds.
    - ``domain_blocklist``: names Pebble refuses (``rejectedIdentifier``).
    - ``pebble`` / ``challtestsrv``: binary names or paths.
    - ``startup_timeout``: seconds to wait for both servers to answer.

    The object is usable after :meth:`start` (or inside ``with``) until
    :meth:`stop`. Helpers may be called from any thread: each call opens its
    own connection. Not re-startable: make a new one instead.
    """

    def __init__(
        self,
        *,
        nonce_reject: int | None = None,
        authz_reuse: int | None = None,
        chain_length: int | None = None,
        alternate_roots: int | None = None,
        va_nosleep: bool = True,
        env: Mapping[str, str] | None = None,
        eab_keys: Mapping[str, str] | None = None,
        validity_period: int | None = None,
        domain_blocklist: Sequence[str] = (),
        pebble: str = "pebble",
        challtestsrv: str = "pebble-challtestsrv",
        startup_timeout: float = 20.0,
    ) -> None:
        self._env: dict[str, str] = {}
        if va_nosleep:
            self._env["PEBBLE_VA_NOSLEEP"] = "1"
        if nonce_reject is not None:
            self._env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)
        if authz_reuse is not None:
            self._env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
        if chain_length is not None:
            self._env["PEBBLE_CHAIN_LENGTH"] = str(chain_length)
        if alternate_roots is not None:
            self._env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)
        self._env.update(env or {})
        self.alternate_roots = alternate_roots or 0
        self.eab_keys: dict[str, str] = dict(eab_keys or {})
        self.validity_period = validity_period
        self.domain_blocklist = list(domain_blocklist)
        self._pebble_name = pebble
        self._challtestsrv_name = challtestsrv
        self._startup_timeout = startup_timeout

        self._tmp: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        # No proxies: everything here is on loopback, whatever the environment says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.ca_bundle = Path()
        self.pebble_log = Path()
        self.challtestsrv_log = Path()
        self.listen_port = 0
        self.management_port = 0
        self.http_port = 0
        self.tls_port = 0
        self.dns_port = 0
        self.challtestsrv_port = 0

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> LocalPebble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _binary(self, name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise CertmanError(
                f"{name} not found: install Pebble (Debian: apt-get install -y pebble)",
                code="pebble-missing",
                binary=name,
            )
        return path

    def start(self) -> None:
        """Start both servers and wait until Pebble's directory answers.

        Raises ``CertmanError`` (``pebble-missing`` when a binary is absent,
        ``pebble-start`` when the servers do not come up in time).
        """
        if self._tmp is not None:
            raise CertmanError("LocalPebble already started", code="pebble-state")
        pebble_bin = self._binary(self._pebble_name)
        challtestsrv_bin = self._binary(self._challtestsrv_name)
        self._tmp = Path(tempfile.mkdtemp(prefix="certman-pebble-"))
        try:
            ca, cert, key = _write_tls_material(self._tmp)
            self.ca_bundle = ca
            self._opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}),
                urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca))),
            )
            last: CertmanError | None = None
            for attempt in range(_START_ATTEMPTS):
                try:
                    self._start_once(pebble_bin, challtestsrv_bin, cert, key)
                    return
                except CertmanError as exc:
                    # Most likely another process took one of our ports
                    # between probing and binding: retry on fresh ports.
                    log.debug("LocalPebble start attempt %d failed: %s", attempt + 1, exc)
                    last = exc
                    self._terminate()
            assert last is not None
            raise last
        except BaseException:
            self.stop()
            raise

    def _start_once(self, pebble_bin: str, challtestsrv_bin: str, cert: Path, key: Path) -> None:
        assert self._tmp is not None
        (
            self.listen_port,
            self.management_port,
            self.http_port,
            self.tls_port,
            self.dns_port,
            self.challtestsrv_port,
        ) = _free_ports(6)
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.listen_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            config["externalAccountMACKeys"] = self.eab_keys
        if self.domain_blocklist:
            config["domainBlocklist"] = self.domain_blocklist
        if self.validity_period is not None:
            config["certificateValidityPeriod"] = self.validity_period
        config_path = self._tmp / "pebble-config.json"
        config_path.write_text(json.dumps({"pebble": config}, indent=2))

        env = dict(os.environ)
        env.update(self._env)
        self.challtestsrv_log = self._tmp / "challtestsrv.log"
        self.pebble_log = self._tmp / "pebble.log"
        with open(self.challtestsrv_log, "ab") as out:
            self._procs.append(
                subprocess.Popen(
                    [
                        challtestsrv_bin,
                        "-dns01",
                        f"127.0.0.1:{self.dns_port}",
                        "-management",
                        f"127.0.0.1:{self.challtestsrv_port}",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(self.pebble_log, "ab") as out:
            self._procs.append(
                subprocess.Popen(
                    [
                        pebble_bin,
                        "-config",
                        str(config_path),
                        "-dnsserver",
                        f"127.0.0.1:{self.dns_port}",
                        "-strict=false",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._tmp,
                )
            )
        self._wait_ready()
        log.debug("LocalPebble ready at %s", self.directory_url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        delay = 0.02
        pending = {"pebble", "challtestsrv"}
        while pending:
            for proc, name, log_path in zip(
                self._procs,
                ("pebble-challtestsrv", "pebble"),
                (self.challtestsrv_log, self.pebble_log),
                strict=True,
            ):
                if proc.poll() is not None:
                    raise CertmanError(
                        f"{name} exited with status {proc.returncode}: {_tail(log_path, 5)}",
                        code="pebble-start",
                    )
            if "pebble" in pending and self._answers(self.directory_url):
                pending.discard("pebble")
            if "challtestsrv" in pending and self._answers(f"{self.challtestsrv_url}/"):
                pending.discard("challtestsrv")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise CertmanError(
                    f"Pebble did not answer within {self._startup_timeout:.0f} s:"
                    f" {_tail(self.pebble_log, 5)}",
                    code="pebble-start",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _answers(self, url: str) -> bool:
        try:
            with self._opener.open(url, timeout=2) as resp:
                resp.read()
            return True
        except urllib.error.HTTPError as exc:
            exc.close()
            return True  # it answered, even if with 404
        except (OSError, ssl.SSLError):
            return False

    def _terminate(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused Pebble must see the SIGTERM
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs = []

    def stop(self) -> None:
        """Stop both servers (terminate, wait, then kill) and remove the temp dir."""
        self._terminate()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        # self._tmp stays set: a stopped LocalPebble is not restarted.

    def pause(self) -> None:
        """Freeze Pebble (SIGSTOP), as a CA that stops answering: connections
        are still accepted by the kernel but nothing answers them, so clients
        hit their own time-outs. Pebble keeps its accounts and orders (a
        killed and restarted Pebble would be a new CA); :meth:`resume` goes on.
        For fault tests; POSIX only."""
        self._pebble_process().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a Pebble frozen by :meth:`pause` (SIGCONT)."""
        self._pebble_process().send_signal(signal.SIGCONT)

    def _pebble_process(self) -> subprocess.Popen[bytes]:
        # _start_once starts challtestsrv first, then Pebble.
        if not self._procs or self._procs[-1].poll() is not None:
            raise CertmanError("LocalPebble is not running", code="pebble-state")
        return self._procs[-1]

    @property
    def running(self) -> bool:
        """True while both processes are alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    # -- addresses ---------------------------------------------------------

    @property
    def directory_url(self) -> str:
        """The ACME directory URL (HTTPS, verify with :attr:`ca_bundle`)."""
        return f"https://127.0.0.1:{self.listen_port}/dir"

    @property
    def management_url(self) -> str:
        """Base URL of Pebble's management API (HTTPS, same CA bundle)."""
        return f"https://127.0.0.1:{self.management_port}"

    @property
    def challtestsrv_url(self) -> str:
        """Base URL of pebble-challtestsrv's management API (plain HTTP)."""
        return f"http://127.0.0.1:{self.challtestsrv_port}"

    # -- management helpers ------------------------------------------------

    def _request(self, url: str, body: dict[str, Any] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")  # noqa: S310 - fixed loopback URLs
        try:
            with self._opener.open(req, timeout=10) as resp:
                payload: bytes = resp.read()
                return payload
        except urllib.error.HTTPError as exc:
            exc.close()
            raise CertmanError(
                f"{url} answered HTTP {exc.code}", code="pebble-management", status=exc.code
            ) from exc
        except OSError as exc:
            raise CertmanError(f"{url}: {exc}", code="pebble-management") from exc

    def root_pem(self, index: int = 0) -> str:
        """The PEM of root ``index`` (0 = default chain, 1.. = alternates)."""
        return self._request(f"{self.management_url}/roots/{index}").decode()

    def intermediate_pem(self, index: int = 0) -> str:
        """The PEM of the intermediate directly under root ``index``."""
        return self._request(f"{self.management_url}/intermediates/{index}").decode()

    def roots_pem(self) -> list[str]:
        """Every root PEM: the default one, then one per alternate chain."""
        return [self.root_pem(i) for i in range(self.alternate_roots + 1)]

    def cert_status(self, serial: int | str) -> dict[str, Any]:
        """Pebble's record for a certificate serial (int, or hex without 0x)."""
        hex_serial = format(serial, "x") if isinstance(serial, int) else serial.lower()
        data: dict[str, Any] = json.loads(
            self._request(f"{self.management_url}/cert-status-by-serial/{hex_serial}")
        )
        return data

    def is_revoked(self, serial: int | str) -> bool:
        """Whether Pebble considers the certificate with this serial revoked."""
        return str(self.cert_status(serial).get("Status", "")).lower() == "revoked"

    def add_a(self, host: str, addresses: Sequence[str]) -> None:
        """Make ``host`` resolve to ``addresses`` for Pebble's validation."""
        self._request(
            f"{self.challtestsrv_url}/add-a", {"host": host, "addresses": list(addresses)}
        )

    def clear_a(self, host: str) -> None:
        """Forget A records for ``host`` (back to the 127.0.0.1 default)."""
        self._request(f"{self.challtestsrv_url}/clear-a", {"host": host})

    def set_txt(self, host: str, value: str) -> None:
        """Serve TXT ``value`` at ``host`` (e.g. ``_acme-challenge.example.org.``)."""
        self._request(f"{self.challtestsrv_url}/set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        """Remove the TXT records at ``host``."""
        self._request(f"{self.challtestsrv_url}/clear-txt", {"host": _fqdn(host)})

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalPebble {self.directory_url if self.listen_port else ''} {state}>"


def _fqdn(host: str) -> str:
    return host if host.endswith(".") else host + "."


# -- ARI (RFC 9773) -----------------------------------------------------------


@dataclass(frozen=True)
class AriAnswer:
    """What :class:`AriServer` answers for one certificate id: status, body, headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AriRequest:
    """One request :class:`AriServer` received (for assertions in tests)."""

    method: str
    path: str
    headers: Mapping[str, str]


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(status: int, detail: str) -> AriAnswer:
    kind = {400: "malformed", 404: "notFound"}.get(status, "serverInternal")
    body = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail, "status": status}
    return AriAnswer(
        status, json.dumps(body).encode(), {"Content-Type": "application/problem+json"}
    )


class AriServer:
    """A local RFC 9773 renewalInfo endpoint, since Pebble 2.4.0 has none.

    A threaded HTTP(S) server on a free loopback port, as a context manager:

    - ``GET /renewal-info/<certID>`` answers what the test set for that
      certificate id with :meth:`set_window` / :meth:`set_answer` (else what
      ``default`` returns, else 404 with a problem document, as a CA that
      does not know the certificate would); a malformed id gets 400;
    - ``GET /directory`` serves an ACME directory with ``renewalInfo``
      added: the ``upstream_directory`` fetched live (point it at
      :attr:`LocalPebble.directory_url`, trusting ``upstream_ca_bundle``), so
      an ACME client orders from the real Pebble and finds ARI here; or the
      static ``directory`` mapping given. ``advertise_ari=False`` leaves
      ``renewalInfo`` out, to play a CA without ARI;
    - any other method gets 405.

    ``tls=(cert_path, key_path)`` serves HTTPS. Every request is recorded in
    :attr:`requests`. Thread safe: configure it while clients are fetching.
    """

    def __init__(
        self,
        *,
        upstream_directory: str | None = None,
        upstream_ca_bundle: str | os.PathLike[str] | None = None,
        directory: Mapping[str, Any] | None = None,
        advertise_ari: bool = True,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        default: Callable[[str], AriAnswer | None] | None = None,
    ) -> None:
        self._upstream = upstream_directory
        self._upstream_ca = upstream_ca_bundle
        self._static_directory = dict(directory) if directory is not None else None
        self._advertise = advertise_ari
        self._tls = tls
        self._default = default
        self._answers: dict[str, AriAnswer] = {}
        self._lock = threading.Lock()
        self.requests: list[AriRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration -----------------------------------------------------

    def set_window(
        self,
        cert: x509.Certificate | str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        explanation_url: str | None = None,
        retry_after: str | None = "21600",
    ) -> None:
        """Suggest renewing ``cert`` (a certificate or its RFC 9773 id) in [start, end).

        ``retry_after`` is the raw ``Retry-After`` header (None: none sent).
        Times are sent with whole seconds.
        """
        body: dict[str, Any] = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        if explanation_url is not None:
            body["explanationURL"] = explanation_url
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.set_answer(cert, AriAnswer(200, json.dumps(body).encode(), headers))

    def set_answer(self, cert: x509.Certificate | str, answer: AriAnswer) -> None:
        """Answer ``answer`` (any status/body, e.g. a 503) for ``cert``."""
        with self._lock:
            self._answers[self._key(cert)] = answer

    def clear(self, cert: x509.Certificate | str) -> None:
        """Forget what was set for ``cert`` (it gets 404 again)."""
        with self._lock:
            self._answers.pop(self._key(cert), None)

    @staticmethod
    def _key(cert: x509.Certificate | str) -> str:
        if isinstance(cert, str):
            return cert
        from certman.client.ari import cert_id  # imported late: keeps this module light

        return cert_id(cert)

    # -- addresses ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise CertmanError("AriServer is not running", code="ari-stub-stopped")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def renewal_info_url(self) -> str:
        """The ``renewalInfo`` base URL (certificate ids are appended to it)."""
        return f"{self.base_url}/renewal-info"

    @property
    def directory_url(self) -> str:
        """The ACME directory URL with ``renewalInfo`` added."""
        return f"{self.base_url}/directory"

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        server = _QuietHTTPServer(("127.0.0.1", 0), _ari_handler(self))
        server.daemon_threads = True
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="ari-stub", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> AriServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- answering ---------------------------------------------------------

    def _directory(self) -> AriAnswer:
        if self._static_directory is not None:
            directory = dict(self._static_directory)
        elif self._upstream is not None:
            context = ssl.create_default_context(
                cafile=str(self._upstream_ca) if self._upstream_ca else None
            )
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )
            with opener.open(self._upstream, timeout=10) as response:
                directory = json.loads(response.read())
        else:
            return _problem(404, "no directory configured")
        if self._advertise:
            directory["renewalInfo"] = self.renewal_info_url
        return AriAnswer(200, json.dumps(directory).encode(), {"Content-Type": "application/json"})

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> AriAnswer:
        """What the server answers to one request (also recorded)."""
        with self._lock:
            self.requests.append(AriRequest(method, path, dict(headers)))
        if method != "GET":
            return AriAnswer(405, b"", {"Allow": "GET"})
        if path == "/directory":
            return self._directory()
        prefix = "/renewal-info/"
        if not path.startswith(prefix):
            return _problem(404, "not found")
        ident = path[len(prefix) :]
        if not _ARI_ID.fullmatch(ident):
            return _problem(400, f"malformed certificate identifier {ident!r}")
        with self._lock:
            found = self._answers.get(ident)
        if found is None and self._default is not None:
            found = self._default(ident)
        return found if found is not None else _problem(404, "unknown certificate")

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"<AriServer {where}>"


_ARI_ID = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class _QuietHTTPServer(ThreadingHTTPServer):
    """Clients hanging up early (a test's point, often) are logged, not printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("ari stub: connection from %s ended badly", client_address, exc_info=True)


def _ari_handler(owner: AriServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _respond(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            reply = owner.answer(self.command, self.path, dict(self.headers.items()))
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_POST = do_HEAD = do_PUT = _respond

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ari stub: " + format, *args)

    return Handler
