"""ACME identifiers: DNS names (wildcards included) and IP addresses (RFC 8738)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from certman.errors import ConfigError

__all__ = ["Identifier", "parse_identifier", "parse_identifiers"]

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Identifier:
    """``type`` is ``"dns"`` or ``"ip"``; ``value`` is normalized (lower-case
    A-labels without a trailing dot; compressed IP text)."""

    type: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    @property
    def is_wildcard(self) -> bool:
        return self.type == "dns" and self.value.startswith("*.")


def parse_identifier(name: str) -> Identifier:
    """Normalize one name; ``ConfigError`` (``invalid-name``) when it cannot be certified.

    Unicode names are converted to their IDNA A-label form. A wildcard is
    only allowed as the whole left-most label (``*.example.org``).
    """
    raw = name
    name = name.strip()
    try:
        return Identifier("ip", ipaddress.ip_address(name.strip("[]")).compressed)
    except ValueError:
        pass
    name = name.rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ConfigError(f"not a valid domain name: {raw!r}", code="invalid-name") from None
    labels = name.split(".")
    check = labels[1:] if labels[0] == "*" else labels
    if (
        len(name) > 253
        or len(labels) < 2
        or not check
        or not all(_LABEL.fullmatch(label) for label in check)
    ):
        raise ConfigError(f"not a valid domain name: {raw!r}", code="invalid-name")
    return Identifier("dns", name)


def parse_identifiers(names: Iterable[str]) -> tuple[Identifier, ...]:
    """Normalize and de-duplicate names, keeping their order (the first is the
    certificate's main name). ``ConfigError`` (``invalid-name``) if empty."""
    seen: dict[Identifier, None] = {}
    for name in names:
        seen.setdefault(parse_identifier(name), None)
    if not seen:
        raise ConfigError("a certificate needs at least one name", code="invalid-name")
    return tuple(seen)
