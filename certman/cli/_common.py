"""Helpers shared by the CLI commands: global state, error rendering, JSON.

Exit statuses, for every command:
    0  success
    1  the operation failed, or (scan/inspect) findings at or above --fail-on
    2  usage error (bad flags, unreadable arguments)
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from certman.errors import CertmanError, ConfigError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class CliState:
    """Global options, as given on the command line or in the environment."""

    home: Path | None = None
    store_url: str | None = None
    server: str | None = None
    staging: bool = False
    ca_bundle: Path | None = None
    verbose: int = 0


def state(ctx: click.Context) -> CliState:
    """The global options of the running command (defaults when run standalone)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def fail(message: str, *, code: str = "error", status: int = EXIT_FAILURE) -> None:
    """Print one clear line on stderr and exit with ``status``."""
    click.echo(f"certman: error: {message} [{code}]", err=True)
    sys.exit(status)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn CertmanError into one line on stderr and exit 1 (2 for ConfigError)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"certman: error: {exc} [{exc.code}]", err=True)
            sys.exit(EXIT_USAGE)
        except CertmanError as exc:
            click.echo(f"certman: error: {exc} [{exc.code}]", err=True)
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("certman: interrupted", err=True)
            sys.exit(130)

    return wrapper


def echo_json(value: Any) -> None:
    """Write one JSON document (sorted keys, ISO dates via str) on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def is_tty(stream: Any = None) -> bool:
    """Whether progress output should be drawn (stderr is a terminal)."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
