"""Helpers for the ACME client tests: tiny solvers and a Pebble starter.

The HTTP-01 solver here is deliberately minimal (http.server in a thread on
LocalPebble.http_port) so these tests exercise the client against the real
CA without depending on the challenge layer's responder.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from certman.challenges.base import ChallengeTask
from certman.testing import LocalPebble
from tests.conftest import require_tool


class Http01Solver:
    """Serves key authorizations from a dict on 127.0.0.1:<port>."""

    challenge_types = ("http-01",)

    def __init__(self, port: int) -> None:
        self.tokens: dict[str, str] = {}
        self.presented: list[ChallengeTask] = []
        self.cleaned: list[ChallengeTask] = []
        self.requests = 0
        tokens = self.tokens
        solver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                solver.requests += 1
                prefix = "/.well-known/acme-challenge/"
                value = (
                    tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
                )
                body = (value or "not found").encode()
                self.send_response(200 if value else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            assert task.challenge_type == "http-01"
            self.tokens[task.token] = task.validation
            self.presented.append(task)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            self.tokens.pop(task.token, None)
            self.cleaned.append(task)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Dns01Solver:
    """Sets TXT records through pebble-challtestsrv's management API."""

    challenge_types = ("dns-01",)

    def __init__(self, pebble: LocalPebble) -> None:
        self.pebble = pebble
        self.presented: list[ChallengeTask] = []
        self.cleaned: list[ChallengeTask] = []

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            self.pebble.set_txt(task.dns_record_name, task.validation)
            self.presented.append(task)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            self.pebble.clear_txt(task.dns_record_name)
            self.cleaned.append(task)


def start_pebble(**kwargs: object) -> LocalPebble:
    require_tool("pebble", package="pebble")
    require_tool("pebble-challtestsrv", package="pebble")
    pebble = LocalPebble(**kwargs)  # type: ignore[arg-type]
    pebble.start()
    return pebble
