"""The public API is what certman.__all__ lists, and every name there exists."""

from __future__ import annotations

import certman


def test_all_names_exist() -> None:
    missing = [name for name in certman.__all__ if not hasattr(certman, name)]
    assert missing == []


def test_no_unlisted_public_names() -> None:
    # Every public (non-underscore) attribute that is not a submodule is listed.
    import types

    public = {
        name
        for name, value in vars(certman).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(certman.__all__), public - set(certman.__all__)


def test_errors_carry_codes() -> None:
    err = certman.AcmeError("boom", problem_type="urn:ietf:params:acme:error:rejectedIdentifier")
    assert err.code == "acme"
    assert err.to_dict()["problem_type"].endswith("rejectedIdentifier")
    assert certman.StoreError("x", code="store-corrupt").code == "store-corrupt"


def test_lazy_table_matches_all() -> None:
    # Every lazily imported name is public, and every public name is either
    # defined eagerly or in the lazy table: nothing listed can be missing.
    lazy = set(certman._LAZY)
    assert lazy <= set(certman.__all__)
    eager = {name for name in certman.__all__ if name in vars(certman)} - lazy
    assert set(certman.__all__) == lazy | eager | {"__version__"}


def test_import_does_not_load_acme_stack() -> None:
    # `certman scan` workers and `certman list` must not pay for the ACME stack.
    import subprocess
    import sys

    code = (
        "import sys, certman, certman.errors; print('acme' in sys.modules, 'josepy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
