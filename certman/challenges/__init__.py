"""Answering ACME challenges. Knows tokens and validations, not orders."""

from certman.challenges.base import ChallengeTask, Solver
from certman.challenges.http01 import (
    MemoryTokenStore,
    StoreTokenStore,
    TokenStore,
    TokenStoreSolver,
    is_valid_token,
    validate_token,
)

__all__ = [
    "ChallengeTask",
    "MemoryTokenStore",
    "Solver",
    "StoreTokenStore",
    "TokenStore",
    "TokenStoreSolver",
    "is_valid_token",
    "validate_token",
]
