"""The ``Store`` protocol: where certman keeps accounts, certificates, tokens and locks.

Two implementations share this contract: :class:`certman.store.files.FileStore`
(the embedded default, one machine) and ``PostgresStore`` (several machines
sharing one database). Everything above the store — the client, the manager,
the CLI — talks only to this protocol, so the values that cross it are plain
frozen dataclasses holding bytes, strings and timezone-aware UTC datetimes.

Conventions every implementation follows:

- ``load_*`` raises :class:`~certman.errors.StoreError` with code
  ``"store-not-found"`` when the thing does not exist; ``find_*`` returns
  ``None`` instead. ``list_*`` return an empty list, never raise, for an empty
  store.
- Data that exists but cannot be read back (bad JSON, a missing field, a
  naive datetime) raises ``StoreError`` with code ``"store-corrupt"`` and the
  offending location in ``details["path"]``; never a raw traceback.
- Names (certificate lineage names, account ids) are validated with
  :func:`validate_name`; a bad one raises ``StoreError`` code
  ``"store-bad-name"`` before anything is touched.
- Every write is atomic: a reader (another thread or process) sees either the
  old or the new state, never half of one, and a crash at any instant leaves
  the previously live certificate live and the store readable.
- Implementations are safe to share between threads and between processes
  (several ``certman renew`` runs, a web node answering tokens while another
  process issues). Writes of *different* certificates never conflict; two
  writers of the *same* certificate must hold :meth:`Store.lock_certificate`
  (``save_certificate`` takes it itself, re-entrantly).
- Private keys are never logged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from certman.errors import StoreError

#: Lineage names and account ids: a safe single path component.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,199}")

#: Version of the JSON documents this code writes (``"format"`` key).
FORMAT_VERSION = 1


def validate_name(name: str, *, what: str = "certificate name") -> str:
    """Return ``name`` if it is a safe single path component, else raise.

    Allowed: letters, digits and ``._@+-`` (not first, except ``_``), at most
    200 characters, no ``..`` anywhere. This keeps every name usable as a file
    name, a lock name and a database key, with no way to escape a directory.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise StoreError(
            f"invalid {what} {name!r}: use letters, digits and ._@+- "
            "(no '/', no '..', at most 200 characters)",
            code="store-bad-name",
            name=name if isinstance(name, str) else repr(name),
        )
    return name


def ca_key(directory_url: str) -> str:
    """The CA's short key, used to group accounts: ``host`` or ``host_port``.

    ``https://acme-v02.api.letsencrypt.org/directory`` ->
    ``acme-v02.api.letsencrypt.org``; ``https://localhost:14000/dir`` ->
    ``localhost_14000`` (a non-default port is kept so two local test CAs on
    one host never share accounts).
    """
    parts = urlsplit(directory_url)
    host = (parts.hostname or "").lower()
    if not host:
        raise StoreError(
            f"not a CA directory URL: {directory_url!r}", code="store-bad-name", url=directory_url
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise StoreError(
            f"not a CA directory URL: {directory_url!r}", code="store-bad-name", url=directory_url
        ) from exc
    if ":" in host:  # an IPv6 literal: keep it readable and a valid name
        host = "ipv6-" + host.replace(":", "-")
    key = re.sub(r"[^a-z0-9._-]", "-", host)
    default_port = 443 if parts.scheme == "https" else 80
    if port is not None and port != default_port:
        key = f"{key}_{port}"
    return validate_name(key, what="CA key")


def account_id_for_url(account_url: str) -> str:
    """A stable, path-safe account id for an ACME account URL.

    The URL's last path segment when it is a safe short name (Let's Encrypt's
    ``.../acme/acct/123456`` -> ``123456``), else the first 16 hex digits of
    the URL's SHA-256.
    """
    last = urlsplit(account_url).path.rstrip("/").rsplit("/", 1)[-1]
    if last and len(last) <= 64 and NAME_RE.fullmatch(last) and ".." not in last:
        return last
    return hashlib.sha256(account_url.encode()).hexdigest()[:16]


# -- values -------------------------------------------------------------------


def _dt_to_json(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: store times must be timezone-aware UTC")
    return value.astimezone(UTC).isoformat()


def _dt_from_json(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time without a timezone: {value!r}")
    return parsed.astimezone(UTC)


def _str_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _json_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    # Round-trip to prove the value is JSON-able and to detach it from the caller.
    loaded: dict[str, Any] = json.loads(json.dumps(value))
    return loaded


@dataclass(frozen=True)
class AccountRecord:
    """An ACME account as the store keeps it (the private key is kept apart).

    ``account_id`` is the store's name for the account (see
    :func:`account_id_for_url`); ``(directory_url, account_id)`` identifies it.
    ``uri`` is the account URL the CA returned (the JWS ``kid``).
    ``status`` mirrors the CA's: ``"valid"``, ``"deactivated"`` or
    ``"revoked"``. ``extra`` is a JSON-able mapping for anything else the
    client wants to remember (e.g. the EAB key id, the key type).
    """

    account_id: str
    directory_url: str
    uri: str
    contact: tuple[str, ...] = ()
    status: str = "valid"
    terms_of_service_agreed: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document form (``format`` key included)."""
        return {
            "format": FORMAT_VERSION,
            "account_id": self.account_id,
            "directory_url": self.directory_url,
            "uri": self.uri,
            "contact": list(self.contact),
            "status": self.status,
            "terms_of_service_agreed": self.terms_of_service_agreed,
            "created_at": _dt_to_json(self.created_at),
            "updated_at": _dt_to_json(self.updated_at),
            "extra": _json_mapping(dict(self.extra)),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AccountRecord:
        """Parse :meth:`to_dict`'s output; raises ``ValueError``/``KeyError`` on bad data."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        for key in ("account_id", "directory_url", "uri"):
            if not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string")
        status = data.get("status", "valid")
        if not isinstance(status, str):
            raise ValueError("status must be a string")
        return cls(
            account_id=data["account_id"],
            directory_url=data["directory_url"],
            uri=data["uri"],
            contact=_str_tuple(data.get("contact", [])),
            status=status,
            terms_of_service_agreed=bool(data.get("terms_of_service_agreed", False)),
            created_at=_dt_from_json(data.get("created_at")),
            updated_at=_dt_from_json(data.get("updated_at")),
            extra=_json_mapping(data.get("extra", {})),
        )


@dataclass(frozen=True)
class CertificateFiles:
    """The four PEM files of one certificate version, as bytes.

    ``chain_pem`` is the issuer chain without the leaf; ``fullchain_pem`` is
    the leaf followed by the chain (what nginx's ``ssl_certificate`` wants).
    ``privkey_pem`` is the certificate's private key (stored 0600).
    """

    cert_pem: bytes
    chain_pem: bytes
    fullchain_pem: bytes
    privkey_pem: bytes

    @classmethod
    def from_parts(cls, cert_pem: bytes, chain_pem: bytes, privkey_pem: bytes) -> CertificateFiles:
        """Build the set from leaf, chain and key, deriving ``fullchain``."""
        leaf = cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n"
        return cls(cert_pem, chain_pem, leaf + chain_pem, privkey_pem)


@dataclass(frozen=True)
class CertificateVersion:
    """One stored version of a lineage: its number, its files, when it was saved."""

    name: str
    version: int
    files: CertificateFiles
    saved_at: datetime | None = None


@dataclass(frozen=True)
class CertificateMeta:
    """What certman remembers about a lineage besides its PEM files.

    Written at issue time and updated by renewals. All times are
    timezone-aware UTC (a naive datetime is refused when saving).

    - ``names``: the identifiers on the certificate, in order (DNS names,
      ``*.`` wildcards, IP addresses). ``key_type``: ``"ec-p256"``,
      ``"ec-p384"``, ``"rsa-2048"``... ``profile``: the ACME profile asked
      for, if any. ``preferred_chain``: issuer CN asked for, if any.
    - ``directory_url`` / ``account_id``: which CA and account issued it (the
      renewal uses the same).
    - ``solver`` / ``solver_options``: how challenges were answered
      (``"standalone"``, ``"webroot"``, ``"dns-hook"``...) and their JSON-able
      options (listen address, webroot dir, hook command), so ``renew`` can
      do the same unattended.
    - ``pre_hooks`` / ``deploy_hooks`` / ``post_hooks``: commands stored at
      issue time, run around each renewal.
    - ARI (RFC 9773) state: ``ari_window_start`` / ``ari_window_end`` (the
      CA's suggested window), ``ari_chosen_time`` (the instant picked in it),
      ``ari_retry_after`` (when to ask again), ``ari_explanation_url``.
    - Outcome bookkeeping: ``last_success_at``, ``last_error`` (one line),
      ``last_error_code`` (a ``CertmanError.code``), ``last_error_at``,
      ``consecutive_failures``, ``next_retry_at``.
    - ``not_after`` / ``serial``: cached from the live certificate so listing
      a large store does not parse every PEM (the PEM stays authoritative).
    - ``extra``: a JSON-able mapping for anything else; round-trips untouched.
    """

    name: str
    names: tuple[str, ...]
    key_type: str = "ec-p256"
    profile: str | None = None
    preferred_chain: str | None = None
    directory_url: str | None = None
    account_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    solver: str | None = None
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    pre_hooks: tuple[str, ...] = ()
    deploy_hooks: tuple[str, ...] = ()
    post_hooks: tuple[str, ...] = ()
    ari_window_start: datetime | None = None
    ari_window_end: datetime | None = None
    ari_chosen_time: datetime | None = None
    ari_retry_after: datetime | None = None
    ari_explanation_url: str | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_code: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    next_retry_at: datetime | None = None
    not_after: datetime | None = None
    serial: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _TIMES = (
        "created_at",
        "updated_at",
        "ari_window_start",
        "ari_window_end",
        "ari_chosen_time",
        "ari_retry_after",
        "last_success_at",
        "last_error_at",
        "next_retry_at",
        "not_after",
    )
    _TUPLES = ("names", "pre_hooks", "deploy_hooks", "post_hooks")
    _OPT_STRS = (
        "profile",
        "preferred_chain",
        "directory_url",
        "account_id",
        "solver",
        "ari_explanation_url",
        "last_error",
        "last_error_code",
        "serial",
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document form (``format`` key included)."""
        out: dict[str, Any] = {"format": FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._TIMES:
                out[f.name] = _dt_to_json(value)
            elif f.name in self._TUPLES:
                out[f.name] = list(value)
            elif f.name in ("solver_options", "extra"):
                out[f.name] = _json_mapping(dict(value))
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CertificateMeta:
        """Parse :meth:`to_dict`'s output; raises ``ValueError``/``KeyError`` on bad data.

        Unknown keys (written by a newer certman) are ignored; missing
        optional keys take their defaults.
        """
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if not isinstance(data["name"], str):
            raise ValueError("name must be a string")
        kwargs: dict[str, Any] = {"name": data["name"]}
        for f in fields(cls):
            if f.name == "name" or f.name not in data:
                continue
            value = data[f.name]
            if f.name in cls._TIMES:
                kwargs[f.name] = _dt_from_json(value)
            elif f.name in cls._TUPLES:
                kwargs[f.name] = _str_tuple(value)
            elif f.name in cls._OPT_STRS:
                kwargs[f.name] = _opt_str(value)
            elif f.name in ("solver_options", "extra"):
                kwargs[f.name] = _json_mapping(value)
            elif f.name == "key_type":
                if not isinstance(value, str):
                    raise ValueError("key_type must be a string")
                kwargs[f.name] = value
            elif f.name == "consecutive_failures":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError("consecutive_failures must be a non-negative integer")
                kwargs[f.name] = value
        if "names" not in kwargs:
            raise KeyError("names")
        return cls(**kwargs)


# -- the protocol -------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """Where accounts, certificates, meta, HTTP-01 tokens and locks live.

    See the module docstring for the conventions (``load_*`` raises
    ``store-not-found``, ``find_*`` returns ``None``, atomic writes, thread
    and process safety, ``store-corrupt`` for unreadable data).
    """

    # -- accounts --------------------------------------------------------

    def save_account(self, account: AccountRecord, key_pem: bytes) -> None:
        """Create or overwrite an account together with its private key (PEM).

        The key is written first (0600), then the record, so an account whose
        record can be read always has its key.
        """
        ...

    def update_account(self, account: AccountRecord) -> None:
        """Rewrite an existing account's record, keeping its key.

        Raises ``store-not-found`` when the account does not exist.
        """
        ...

    def save_account_key(self, directory_url: str, account_id: str, key_pem: bytes) -> None:
        """Replace an existing account's private key (after a key rollover).

        The previous key is kept (``FileStore``: ``key.prev.pem``, 0600) so a
        crash between the CA's key change and this call can be recovered by
        hand. Raises ``store-not-found`` when the account does not exist.
        """
        ...

    def load_account(self, directory_url: str, account_id: str) -> AccountRecord:
        """The account record; ``store-not-found`` if absent."""
        ...

    def load_account_key(self, directory_url: str, account_id: str) -> bytes:
        """The account's private key PEM; ``store-not-found`` if absent."""
        ...

    def list_accounts(self, directory_url: str | None = None) -> list[AccountRecord]:
        """All accounts, or those of one CA directory URL, oldest first."""
        ...

    def find_account(self, directory_url: str) -> AccountRecord | None:
        """The newest account with status ``"valid"`` for this directory URL, or ``None``."""
        ...

    # -- certificates ----------------------------------------------------

    def save_certificate(
        self, name: str, files: CertificateFiles, meta: CertificateMeta | None = None
    ) -> CertificateVersion:
        """Store a new version of lineage ``name`` and make it live.

        Writes the version in full, then switches "live" to it atomically,
        then (when given) saves ``meta``. Takes the lineage lock itself
        (re-entrant for a caller already holding it in the same thread).
        Returns the new version (numbers start at 1 and only grow).
        """
        ...

    def load_live(self, name: str) -> CertificateVersion:
        """The live version; ``store-not-found`` when the lineage has none."""
        ...

    def load_version(self, name: str, version: int) -> CertificateVersion:
        """One archived version; ``store-not-found`` if absent or incomplete."""
        ...

    def list_versions(self, name: str) -> list[int]:
        """Complete versions of a lineage, ascending (empty if unknown).

        May include a version that never went live (a crash between writing
        it and the switch); :meth:`load_live` says which one is live.
        """
        ...

    def list_certificates(self) -> list[str]:
        """Names of lineages that have a live version, sorted."""
        ...

    def delete_certificate(self, name: str) -> None:
        """Remove a lineage entirely (all versions and meta); no-op if absent."""
        ...

    def certificate_location(self, name: str) -> str:
        """Where a user finds the live files, for messages: a directory or a URI."""
        ...

    def save_meta(self, meta: CertificateMeta) -> None:
        """Create or replace the meta of lineage ``meta.name`` (atomically)."""
        ...

    def load_meta(self, name: str) -> CertificateMeta:
        """The lineage's meta; ``store-not-found`` if none, ``store-corrupt`` if unreadable."""
        ...

    def find_meta(self, name: str) -> CertificateMeta | None:
        """Like :meth:`load_meta` but ``None`` when there is none."""
        ...

    # -- HTTP-01 tokens (shared between processes / machines) -------------

    def put_token(self, token: str, key_authorization: str) -> None:
        """Publish a token's key authorization (replaces any previous value)."""
        ...

    def get_token(self, token: str) -> str | None:
        """The key authorization for ``token``, or ``None``."""
        ...

    def delete_token(self, token: str) -> None:
        """Withdraw a token; no-op if absent."""
        ...

    # -- locks -----------------------------------------------------------

    def lock_certificate(
        self, name: str, *, timeout: float | None = None
    ) -> AbstractContextManager[None]:
        """Exclusive lock on lineage ``name`` across threads and processes.

        ``timeout=None`` waits forever, ``0`` does not wait; when the lock
        cannot be had in time, raises ``StoreError`` code ``"store-locked"``.
        Re-entrant within one thread. Released on exit, and by the OS if the
        process dies.
        """
        ...

    def try_lock_certificate(self, name: str) -> AbstractContextManager[bool]:
        """Non-blocking variant: yields ``True`` if the lock is held, else ``False``."""
        ...

    def lock_account(
        self, directory_url: str, account_id: str, *, timeout: float | None = None
    ) -> AbstractContextManager[None]:
        """Exclusive lock on one account (rollover, deactivation); as :meth:`lock_certificate`."""
        ...

    def try_lock_account(self, directory_url: str, account_id: str) -> AbstractContextManager[bool]:
        """Non-blocking variant of :meth:`lock_account`."""
        ...


def not_found(what: str, **details: Any) -> StoreError:
    """The ``store-not-found`` error, phrased the same way by every store."""
    return StoreError(f"{what} not found", code="store-not-found", **details)


def corrupt(location: str, reason: str) -> StoreError:
    """The ``store-corrupt`` error naming the unreadable file or row."""
    return StoreError(
        f"store data is corrupt: {location}: {reason}", code="store-corrupt", path=location
    )


# What every store does between its records and their JSON documents, so that
# the FileStore and the PostgresStore refuse and report the same things.


def account_doc(account: AccountRecord) -> dict[str, Any]:
    """``account.to_dict()``; a value that is not JSON-able is ``store-bad-value``."""
    try:
        return account.to_dict()
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot save account {account.account_id!r}: {exc}", code="store-bad-value"
        ) from exc


def parse_account(doc: Any, location: str) -> AccountRecord:
    """The record in ``doc`` (read from ``location``); bad data is ``store-corrupt``."""
    try:
        return AccountRecord.from_dict(doc)
    except (KeyError, ValueError, TypeError) as exc:
        raise corrupt(location, f"bad account record ({exc!r})") from exc


def sorted_accounts(records: list[AccountRecord]) -> list[AccountRecord]:
    """Oldest first (no creation time: first of all), then by account id."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(records, key=lambda r: (r.created_at or epoch, r.account_id))


def newest_valid_account(records: list[AccountRecord]) -> AccountRecord | None:
    """What ``find_account`` answers: the last ``valid`` one of :func:`sorted_accounts`."""
    valid = [a for a in records if a.status == "valid"]
    return valid[-1] if valid else None


def meta_doc(meta: CertificateMeta) -> dict[str, Any]:
    """``meta.to_dict()``, proven JSON-able; anything else is ``store-bad-value``."""
    try:
        doc = meta.to_dict()
        json.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot save meta of {meta.name!r}: {exc}", code="store-bad-value", name=meta.name
        ) from exc
    return doc


def parse_meta(doc: Any, name: str, location: str) -> CertificateMeta:
    """The meta of ``name`` in ``doc``; bad data or another name is ``store-corrupt``."""
    try:
        meta = CertificateMeta.from_dict(doc)
    except (KeyError, ValueError, TypeError) as exc:
        raise corrupt(location, f"bad meta ({exc!r})") from exc
    if meta.name != name:
        raise corrupt(location, f"names {meta.name!r}, not {name!r}")
    return meta
