"""Shared pytest set-up.

Tests that need a real external part (pebble, PostgreSQL) call
:func:`require_tool`: on a developer machine without it they skip with the
command to install it; under ``CI=true`` a missing part is a failure, never a
skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, *, package: str) -> str:
    """Return the path of executable ``name`` or skip (fail under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt-get install -y {package}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
