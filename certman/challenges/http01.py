"""HTTP-01 tokens: validation, the ``TokenStore`` protocol and its simple stores.

A ``TokenStore`` maps a challenge token to the key authorization that must
be served at ``/.well-known/acme-challenge/<token>``. Solvers put tokens in;
responders (the standalone server, the WSGI app/middleware) read them out.
Sharing one store lets a responder in one place answer for orders placed
elsewhere: :class:`MemoryTokenStore` within a process, :class:`StoreTokenStore`
between processes (``FileStore``) or machines (``PostgresStore``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from certman.challenges.base import ChallengeTask
from certman.errors import ChallengeError

if TYPE_CHECKING:
    from certman.store.base import Store

log = logging.getLogger(__name__)

#: RFC 8555 §8.3: a token is base64url without padding. Bounded so a path
#: can never be used to make us allocate or look up something huge.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
MAX_TOKEN_LENGTH = 256

#: The path prefix the CA fetches.
CHALLENGE_PATH_PREFIX = "/.well-known/acme-challenge/"


def is_valid_token(token: object) -> bool:
    """True if ``token`` is a non-empty base64url string of at most 256 characters."""
    return (
        isinstance(token, str)
        and 0 < len(token) <= MAX_TOKEN_LENGTH
        and TOKEN_RE.fullmatch(token) is not None
    )


def validate_token(token: str) -> str:
    """Return ``token`` or raise ``ChallengeError`` code ``"challenge-bad-token"``."""
    if not is_valid_token(token):
        shown = token[:40] + "..." if isinstance(token, str) and len(token) > 40 else token
        raise ChallengeError(
            f"invalid HTTP-01 token {shown!r}: must be 1-{MAX_TOKEN_LENGTH} characters "
            "of [A-Za-z0-9_-]",
            code="challenge-bad-token",
        )
    return token


def token_from_path(path: str) -> str | None:
    """The token in ``/.well-known/acme-challenge/<token>``, or ``None``.

    ``path`` is compared as received, *not* percent-decoded: tokens only
    contain unreserved characters, so anything with ``%``, ``/`` or ``..`` in
    the last segment is simply not a token.
    """
    if not path.startswith(CHALLENGE_PATH_PREFIX):
        return None
    token = path[len(CHALLENGE_PATH_PREFIX) :]
    return token if is_valid_token(token) else None


@runtime_checkable
class TokenStore(Protocol):
    """Token -> key authorization, shared by solvers (writers) and responders (readers).

    Contract:
    - Implementations are thread safe: a responder reads from many threads
      while solvers of concurrent orders write.
    - ``put`` replaces any value already stored for the token and is visible
      to ``get`` (in any thread sharing the store) as soon as it returns.
    - ``get`` returns ``None`` for an unknown token, never raises for one;
      callers validate tokens first (:func:`is_valid_token`) and
      implementations may return ``None`` for an invalid one.
    - ``delete`` of an unknown token is a no-op.
    - Key authorizations are not secret once served, but they are never
      logged above DEBUG.
    """

    def put(self, token: str, key_authorization: str) -> None: ...

    def get(self, token: str) -> str | None: ...

    def delete(self, token: str) -> None: ...


class MemoryTokenStore:
    """A :class:`TokenStore` in a dict behind a lock: one process, any number of threads."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def put(self, token: str, key_authorization: str) -> None:
        validate_token(token)
        with self._lock:
            self._tokens[token] = key_authorization

    def get(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def delete(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


class StoreTokenStore:
    """A :class:`TokenStore` kept in a certman :class:`~certman.store.base.Store`.

    With a ``FileStore`` every process on the machine that opens the same
    root sees the same tokens (``<root>/tokens/<token>``); with a
    ``PostgresStore`` every machine does. Thread safe because the stores are.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, token: str, key_authorization: str) -> None:
        validate_token(token)
        self.store.put_token(token, key_authorization)

    def get(self, token: str) -> str | None:
        if not is_valid_token(token):
            return None
        return self.store.get_token(token)

    def delete(self, token: str) -> None:
        if is_valid_token(token):
            self.store.delete_token(token)


class TokenStoreSolver:
    """A :class:`~certman.challenges.base.Solver` that publishes HTTP-01 tokens in a TokenStore.

    Use it when a responder you already run (a :class:`~certman.challenges.server.HTTP01Server`,
    the WSGI app or middleware in your site, on this or another machine)
    reads the same store. Thread safe when the token store is.
    """

    challenge_types: tuple[str, ...] = ("http-01",)

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            _require_http01(task)
            validate_token(task.token)
        for task in tasks:
            self.tokens.put(task.token, task.validation)
            log.debug("published HTTP-01 token %s for %s", task.token, task.identifier)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            if is_valid_token(task.token):
                self.tokens.delete(task.token)


def _require_http01(task: ChallengeTask) -> None:
    if task.challenge_type != "http-01":
        raise ChallengeError(
            f"this solver answers http-01 only, not {task.challenge_type} (for {task.identifier})",
            code="challenge-unsupported-type",
            identifier=task.identifier,
        )
