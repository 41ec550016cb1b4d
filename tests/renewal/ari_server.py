"""A local RFC 9773 renewalInfo endpoint for tests (Pebble 2.4.0 has none).

``AriServer`` is a small threaded HTTP(S) server on a free loopback port:

- ``GET /renewal-info/<certID>`` answers what the test set for that
  certificate id (``set_window`` / ``set_answer``), else 404 with a problem
  document, as a CA that does not know the certificate would;
- ``GET /directory`` (when ``upstream_directory`` is given) returns the
  upstream ACME directory (Pebble's) with ``renewalInfo`` added, so an ACME
  client pointed at it orders from real Pebble and finds ARI here; with
  ``directory`` it serves that dict instead (plus ``renewalInfo`` unless
  ``advertise_ari`` is False, to play a CA without ARI);
- anything else is 404, any other method 405.

Every request is recorded (method, path, headers) so tests can check that
fetches are unauthenticated GETs with certman's User-Agent.

The certificate id is computed here independently of certman
(``stub_cert_id``) so tests do not check certman against itself.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

_CERT_ID = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def stub_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1, written separately from certman's implementation."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    if raw[0] & 0x80:  # DER INTEGER of a positive number: keep the sign bit clear
        raw = b"\x00" + raw
    return f"{_b64(aki.key_identifier)}.{_b64(raw)}"


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class AriServer:
    """See the module docstring. Use as a context manager."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        upstream_directory: str | None = None,
        upstream_ca_bundle: str | None = None,
        directory: dict[str, Any] | None = None,
        advertise_ari: bool = True,
        default_window: Callable[[str], Answer | None] | None = None,
    ) -> None:
        self._directory_static = directory
        self._advertise = advertise_ari
        self._tls = tls
        self._upstream = upstream_directory
        self._upstream_ca = upstream_ca_bundle
        self._default = default_window
        self._answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration -------------------------------------------------------

    def set_window(
        self,
        cert_id: str,
        start: datetime,
        end: datetime,
        *,
        explanation_url: str | None = None,
        retry_after: str | None = "21600",
    ) -> None:
        body: dict[str, Any] = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        if explanation_url is not None:
            body["explanationURL"] = explanation_url
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.set_answer(cert_id, Answer(200, json.dumps(body).encode(), headers))

    def set_answer(self, cert_id: str, answer: Answer) -> None:
        with self._lock:
            self._answers[cert_id] = answer

    def answer_for(self, cert_id: str) -> Answer | None:
        with self._lock:
            answer = self._answers.get(cert_id)
        if answer is None and self._default is not None:
            answer = self._default(cert_id)
        return answer

    # -- addresses -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def renewal_info_url(self) -> str:
        return f"{self.base_url}/renewal-info"

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}/directory"

    # -- life cycle ----------------------------------------------------------

    def __enter__(self) -> AriServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- handlers ------------------------------------------------------------

    def _directory(self) -> Answer:
        if self._directory_static is not None:
            directory = dict(self._directory_static)
        elif self._upstream is not None:
            upstream = requests.get(self._upstream, verify=self._upstream_ca or True, timeout=10)
            upstream.raise_for_status()
            directory = upstream.json()
        else:
            return _problem(404, "no directory configured")
        if self._advertise:
            directory["renewalInfo"] = self.renewal_info_url
        return Answer(200, json.dumps(directory).encode(), {"Content-Type": "application/json"})

    def handle(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            self.requests.append(Recorded(method, path, headers))
        if method != "GET":
            return Answer(405, b"", {"Allow": "GET"})
        if path == "/directory":
            return self._directory()
        prefix = "/renewal-info/"
        if path.startswith(prefix):
            cert_id = path[len(prefix) :]
            if not _CERT_ID.fullmatch(cert_id):
                return _problem(400, f"malformed certificate identifier {cert_id!r}")
            answer = self.answer_for(cert_id)
            return answer if answer is not None else _problem(404, "unknown certificate")
        return _problem(404, "not found")


def _problem(status: int, detail: str) -> Answer:
    kind = "malformed" if status == 400 else "notFound" if status == 404 else "serverInternal"
    body = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail, "status": status}
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/problem+json"})


def _make_handler(owner: AriServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _respond(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            answer = owner.handle(self.command, self.path, dict(self.headers.items()))
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_HEAD = do_PUT = _respond

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

    return Handler
