"""certman's exceptions.

Every error the library raises on purpose is a :class:`CertmanError`. Each
carries a machine-readable ``code`` (stable, kebab-case, safe to match on in
scripts and to print in JSON) and a human message meant to be shown as one
line. There is one subclass per layer so callers can catch a whole layer
(``except AcmeError``) without string matching.

The library never prints and never exits: the CLI turns these into one line
on stderr and an exit status.
"""

from __future__ import annotations

from typing import Any


class CertmanError(Exception):
    """Base of every error certman raises on purpose.

    ``code`` is a stable identifier (e.g. ``"acme-unauthorized"``,
    ``"store-corrupt"``); ``details`` holds extra machine-readable context
    that is safe to log (never key material).
    """

    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"code", "message", **details}``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        out.update({k: v for k, v in self.details.items() if v is not None})
        return out


class ConfigError(CertmanError):
    """Bad options or configuration given by the user."""

    default_code = "config"


class InspectorError(CertmanError):
    """A certificate bundle could not be read or inspected."""

    default_code = "inspect"


class AcmeError(CertmanError):
    """The ACME conversation failed.

    When the CA answered with a problem document (RFC 8555 §6.7),
    ``problem_type`` holds its type URN (``urn:ietf:params:acme:error:...``),
    ``detail`` its detail and ``identifier`` the identifier it concerns.
    """

    default_code = "acme"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        problem_type: str | None = None,
        detail: str | None = None,
        identifier: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(
            message,
            code=code,
            problem_type=problem_type,
            detail=detail,
            identifier=identifier,
            **details,
        )
        self.problem_type = problem_type
        self.detail = detail
        self.identifier = identifier


class ChallengeError(CertmanError):
    """A challenge could not be set up, answered or cleaned up."""

    default_code = "challenge"


class StoreError(CertmanError):
    """The store (files or database) could not be read or written."""

    default_code = "store"


class RenewalError(CertmanError):
    """Issuing or renewing through the manager failed."""

    default_code = "renewal"


__all__ = [
    "AcmeError",
    "CertmanError",
    "ChallengeError",
    "ConfigError",
    "InspectorError",
    "RenewalError",
    "StoreError",
]
