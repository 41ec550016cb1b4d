"""The seam between the ACME client and whatever answers challenges.

The client (``certman.client``) computes everything that needs the account
key — the key authorization and, for DNS-01, the TXT value — and hands the
solver plain values. Solvers therefore never import ``acme`` or ``josepy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ChallengeTask:
    """One challenge to make answerable.

    ``identifier`` is the name as ordered (``*.example.org`` for a wildcard,
    or an IP address); ``challenge_type`` is ``"http-01"`` or ``"dns-01"``;
    ``token`` is the challenge token (already checked against
    ``[A-Za-z0-9_-]+`` by the client); ``validation`` is what must be served:
    the key authorization for HTTP-01, the base64url SHA-256 of it for DNS-01.
    """

    identifier: str
    identifier_type: str
    challenge_type: str
    token: str
    validation: str

    @property
    def dns_record_name(self) -> str:
        """``_acme-challenge.<name>`` for DNS-01 (wildcard label stripped)."""
        name = self.identifier.removeprefix("*.")
        return f"_acme-challenge.{name}."

    @property
    def http_path(self) -> str:
        """The URL path the CA fetches for HTTP-01."""
        return f"/.well-known/acme-challenge/{self.token}"


@runtime_checkable
class Solver(Protocol):
    """Makes challenges answerable, then cleans them up.

    Contract:
    - ``challenge_types`` lists the types this solver can answer, most
      preferred first; the client picks, per authorization, the first type the
      CA offers.
    - ``present(tasks)`` returns only when every task can be answered (the
      CA may fetch immediately after); it raises ``ChallengeError`` otherwise.
      It may be called several times for one order (authorizations in
      batches).
    - ``cleanup(tasks)`` is always called after validation, successful or
      not, and must not raise for tasks that are already gone.
    - A solver is used from one thread at a time unless its docstring says it
      is thread safe; all of certman's own solvers are (standalone,
      token-store, webroot, DNS hook), so concurrent orders can share one.
    """

    challenge_types: tuple[str, ...]

    def present(self, tasks: Sequence[ChallengeTask]) -> None: ...

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None: ...
