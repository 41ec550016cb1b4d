"""The ACME directory (RFC 8555 §7.1.1): which URLs a CA uses, and its terms.

Fetch it once per CA and share the :class:`Directory` value freely between
threads: it is an immutable snapshot. Every :class:`~certman.client.AcmeClient`
built from it then skips the directory round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from certman.errors import AcmeError, ConfigError

__all__ = [
    "LETSENCRYPT",
    "LETSENCRYPT_STAGING",
    "PRESETS",
    "Directory",
    "fetch_directory",
    "resolve_directory_url",
]

log = logging.getLogger(__name__)

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
"""Let's Encrypt production: the default CA."""
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
"""Let's Encrypt staging: untrusted certificates, generous rate limits."""

PRESETS: Mapping[str, str] = {
    "letsencrypt": LETSENCRYPT,
    "letsencrypt-staging": LETSENCRYPT_STAGING,
}
"""Short names accepted wherever a directory URL is."""


def resolve_directory_url(server: str | None = None, *, staging: bool = False) -> str:
    """Turn ``--server`` / ``--staging`` into a directory URL.

    ``None`` means Let's Encrypt production, or staging when ``staging``.
    A preset name (``letsencrypt``, ``letsencrypt-staging``) or any
    ``https://`` (or loopback ``http://``) URL is accepted. Raises
    ``ConfigError`` (``invalid-server``) otherwise, and when ``staging`` is
    combined with an explicit other server.
    """
    if server is None or server == "":
        return LETSENCRYPT_STAGING if staging else LETSENCRYPT
    url = PRESETS.get(server.strip().lower(), server.strip())
    if staging and url != LETSENCRYPT_STAGING:
        raise ConfigError(
            f"--staging conflicts with --server {server}", code="invalid-server", server=server
        )
    if not (url.startswith("https://") or url.startswith("http://")):
        presets = ", ".join(PRESETS)
        raise ConfigError(
            f"server must be an https:// directory URL or one of {presets}, got {server!r}",
            code="invalid-server",
            server=server,
        )
    return url


@dataclass(frozen=True)
class Directory:
    """A CA's directory: endpoint URLs and ``meta``.

    ``profiles`` maps profile name -> description (``meta.profiles``, empty
    when the CA offers none); ``renewal_info`` is the ARI base URL or
    ``None``. ``raw`` keeps the whole JSON object for fields certman does not
    model. Immutable and safe to share between threads.
    """

    url: str
    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str
    key_change: str | None = None
    renewal_info: str | None = None
    terms_of_service: str | None = None
    website: str | None = None
    caa_identities: tuple[str, ...] = ()
    external_account_required: bool = False
    profiles: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, url: str, data: Any) -> Directory:
        """Parse a directory object; ``AcmeError`` (``acme-bad-directory``) if malformed."""
        if not isinstance(data, dict):
            raise AcmeError(f"{url} is not an ACME directory", code="acme-bad-directory", url=url)
        missing = [k for k in ("newNonce", "newAccount", "newOrder", "revokeCert") if k not in data]
        if missing:
            raise AcmeError(
                f"{url} is not an ACME directory (no {', '.join(missing)})",
                code="acme-bad-directory",
                url=url,
            )
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            meta = {}
        profiles = meta.get("profiles") or {}
        if not isinstance(profiles, dict):
            profiles = {}
        caa = meta.get("caaIdentities") or ()
        return cls(
            url=url,
            new_nonce=str(data["newNonce"]),
            new_account=str(data["newAccount"]),
            new_order=str(data["newOrder"]),
            revoke_cert=str(data["revokeCert"]),
            key_change=_opt(data.get("keyChange")),
            renewal_info=_opt(data.get("renewalInfo")),
            terms_of_service=_opt(meta.get("termsOfService")),
            website=_opt(meta.get("website")),
            caa_identities=tuple(str(c) for c in caa) if isinstance(caa, list) else (),
            external_account_required=bool(meta.get("externalAccountRequired", False)),
            profiles={str(k): str(v) for k, v in profiles.items()},
            raw=dict(data),
        )


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def fetch_directory(
    url: str,
    *,
    ca_bundle: str | PathLike[str] | None = None,
    timeout: float = 10.0,
) -> Directory:
    """GET the directory at ``url`` (one request, no retries beyond a reset).

    ``ca_bundle`` verifies a private CA's HTTPS endpoint; without it certifi's
    bundle is used. Raises ``AcmeError``: ``acme-unreachable`` /
    ``acme-tls`` / ``acme-timeout`` when the server cannot be reached,
    ``acme-bad-directory`` when what answers is not an ACME directory.
    """
    from certman.client.network import HttpTransport

    transport = HttpTransport(ca_bundle=ca_bundle, timeout=timeout)
    try:
        data = transport.get_json(url)
    except AcmeError as exc:
        if exc.code in ("acme-bad-response", "acme-http-error"):
            status = exc.details.get("status")
            why = f"HTTP {status}" if status else "not JSON"
            raise AcmeError(
                f"no ACME directory at {url} ({why})", code="acme-bad-directory", url=url
            ) from None
        raise
    finally:
        transport.close()
    directory = Directory.from_json(url, data)
    log.debug("fetched ACME directory %s", url)
    return directory
