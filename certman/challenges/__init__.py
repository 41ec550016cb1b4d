"""Answering ACME challenges. Knows tokens and validations, not orders."""

from certman.challenges.base import ChallengeTask, Solver

__all__ = ["ChallengeTask", "Solver"]
