"""``--store URL`` after the subcommand name, as well as before it.

The root group's ``--store`` (and ``CERTMAN_STORE``) must come before the
subcommand (``certman --store URL renew``); cluster set-ups are usually
written the other way round (``certman renew --store URL``), so the commands
that use a store accept it there too and it wins over the global one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

from certman.cli._common import CliState, state

F = TypeVar("F", bound=Callable[..., Any])


def _override(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        root = ctx.find_root()
        current = root.obj if isinstance(root.obj, CliState) else state(ctx)
        root.obj = dataclasses.replace(current, store_url=value)
    return value


def _store_option(help_text: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--store",
            metavar="URL",
            expose_value=False,
            is_eager=True,
            callback=_override,
            help=help_text,
        )(func)

    return decorate


#: Add ``--store URL`` to a command (overrides the global ``--store``).
store_option = _store_option(
    "Store to use: postgresql://... (cluster mode) or a directory; "
    "same as the global --store / CERTMAN_STORE."
)
#: The same, for the commands that work on a PostgreSQL store only (``db``).
postgres_store_option = _store_option(
    "PostgreSQL store URL (default: the global --store / CERTMAN_STORE)."
)
