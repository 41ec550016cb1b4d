"""Answering ACME challenges. Knows tokens and validations, not orders.

Solvers (all implement :class:`Solver`): :class:`StandaloneSolver` (runs an
:class:`HTTP01Server` while tokens are out), :class:`WebrootSolver` (files
under a web server's document root), :class:`TokenStoreSolver` (publishes into
a :class:`TokenStore` read by a responder you run: the server, or the WSGI
app/middleware), :class:`DnsHookSolver` (DNS-01 through a user command).
"""

from certman.challenges.base import ChallengeTask, Solver
from certman.challenges.dns_hook import DnsHookSolver
from certman.challenges.http01 import (
    MemoryTokenStore,
    StoreTokenStore,
    TokenStore,
    TokenStoreSolver,
    is_valid_token,
    validate_token,
)
from certman.challenges.server import HTTP01Server, StandaloneSolver, parse_listen_address
from certman.challenges.webroot import WebrootSolver
from certman.challenges.wsgi import ChallengeMiddleware, make_wsgi_app

__all__ = [
    "ChallengeMiddleware",
    "ChallengeTask",
    "DnsHookSolver",
    "HTTP01Server",
    "MemoryTokenStore",
    "Solver",
    "StandaloneSolver",
    "StoreTokenStore",
    "TokenStore",
    "TokenStoreSolver",
    "WebrootSolver",
    "is_valid_token",
    "make_wsgi_app",
    "parse_listen_address",
    "validate_token",
]
