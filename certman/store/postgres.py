"""``PostgresStore``: the :class:`~certman.store.base.Store` shared by many machines.

Several web nodes and renewal workers open the same ``postgresql://`` URL.
Everything the FileStore keeps in files lives in tables here (see
``docs/cluster.md`` for the schema):

- ``certman_accounts`` / ``certman_account_keys``: ACME accounts and their
  keys (the previous key is kept after a rollover);
- ``certman_certificates`` (one row per lineage, naming the live version),
  ``certman_certificate_versions`` (the history: every version ever saved is
  kept) and ``certman_certificate_meta``;
- ``certman_tokens``: HTTP-01 key authorizations, with an expiry so a token
  left behind by a crashed worker stops being served on its own;
- ``certman_claims``: who holds which certificate's lock right now, and
  since when (for ``certman db status`` and for people debugging a fleet);
- ``certman_schema``: the applied schema migrations.

**Locks across machines.** :meth:`PostgresStore.lock_certificate` takes a
PostgreSQL *session-level advisory lock* on a connection dedicated to that
lock for as long as it is held. Why advisory locks rather than lease rows
with an expiry: a session lock needs no clock and no heartbeat, cannot
expire under a worker that is merely slow, and is released by the server the
moment the holder's session ends - a worker killed with SIGKILL closes its
socket and loses the lock at once; a machine that vanishes loses it when TCP
keepalives (set on every session, ~1 minute) give up. ``certman_claims``
rows record the holder for humans; a stale row is overwritten by the next
holder and is never consulted for exclusion.

**Fencing.** ``save_certificate`` promotes the new version *on the lock's
own session*, in one transaction (insert the version, point the lineage at
it, save meta). If the lock was lost (the database restarted, the network
cut the session), that session is gone too and the save fails with
``store-unavailable`` instead of overwriting a newer certificate saved by
whoever took the lock over. No reader ever sees a half-written version.

**Schema versions.** The code knows :data:`SCHEMA_VERSION`; ``certman db
upgrade`` (:meth:`PostgresStore.upgrade`) applies the missing migrations in
one transaction. Every other operation first checks the database's version
and refuses with a clear error (``store-schema-missing``,
``store-schema-old``, ``store-schema-new``) rather than failing later on a
missing column.

**Errors.** A database that cannot be reached or goes away mid-run raises
``StoreError`` code ``store-unavailable`` naming the server (never the
password); other database errors ``store-db-error``. No psycopg exception
escapes.

Connections come from a small internal pool, so an instance is safe to share
between threads; each thread's operation borrows a connection for its
duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from cryptography import x509
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from certman.challenges.http01 import is_valid_token
from certman.errors import StoreError
from certman.store.base import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    CertificateVersion,
    Store,
    account_doc,
    ca_key,
    corrupt,
    meta_doc,
    newest_valid_account,
    not_found,
    parse_account,
    parse_meta,
    sorted_accounts,
    validate_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The schema version this code reads and writes.
SCHEMA_VERSION = 2

#: Default lifetime of a published HTTP-01 token (a solver normally deletes it
#: within seconds; the expiry only matters for tokens left by a crashed worker).
DEFAULT_TOKEN_TTL = timedelta(hours=1)

#: ``certman_claims.expires_at`` is set this far ahead: a row older than that
#: is shown as stale by ``db status`` (exclusion never depends on it).
DEFAULT_CLAIM_LEASE = timedelta(minutes=15)

_NOTIFY_CHANNEL = "certman_tokens"
_MIGRATION_LOCK = 0x63657274_6D616E00  # "certman\0": serializes concurrent upgrades

# Each migration is applied once, in order, inside the upgrade transaction.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "accounts, keys, certificates with history, meta, tokens",
        """
        CREATE TABLE certman_accounts (
            ca_key        text NOT NULL,
            account_id    text NOT NULL,
            directory_url text NOT NULL,
            uri           text NOT NULL,
            status        text NOT NULL,
            record        jsonb NOT NULL,
            saved_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (ca_key, account_id)
        );
        CREATE TABLE certman_account_keys (
            ca_key       text NOT NULL,
            account_id   text NOT NULL,
            key_pem      bytea NOT NULL,
            prev_key_pem bytea,
            saved_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (ca_key, account_id),
            FOREIGN KEY (ca_key, account_id)
                REFERENCES certman_accounts (ca_key, account_id) ON DELETE CASCADE
        );
        CREATE TABLE certman_certificates (
            name         text PRIMARY KEY,
            live_version integer,
            last_version integer NOT NULL DEFAULT 0,
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE certman_certificate_versions (
            name          text NOT NULL
                REFERENCES certman_certificates (name) ON DELETE CASCADE,
            version       integer NOT NULL CHECK (version > 0),
            cert_pem      bytea NOT NULL,
            chain_pem     bytea NOT NULL,
            fullchain_pem bytea NOT NULL,
            privkey_pem   bytea NOT NULL,
            serial        text,
            not_after     timestamptz,
            saved_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (name, version)
        );
        CREATE INDEX certman_certificate_versions_serial
            ON certman_certificate_versions (serial);
        CREATE TABLE certman_certificate_meta (
            name       text PRIMARY KEY
                REFERENCES certman_certificates (name) ON DELETE CASCADE,
            meta       jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE certman_tokens (
            token             text PRIMARY KEY,
            key_authorization text NOT NULL,
            created_at        timestamptz NOT NULL DEFAULT now(),
            expires_at        timestamptz NOT NULL
        );
        CREATE INDEX certman_tokens_expires_at ON certman_tokens (expires_at);
        """,
    ),
    (
        2,
        "lock holders (claims) for status and debugging",
        """
        CREATE TABLE certman_claims (
            kind       text NOT NULL,
            name       text NOT NULL,
            holder     text NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (kind, name)
        );
        """,
    ),
)


def redact_url(url: str) -> str:
    """``url`` as safe to print: ``postgresql://user@host:port/db``, never a password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable URL>"
    host = str(info.get("host") or "localhost")
    if "," not in host and ":" in host and not host.startswith("/"):
        host = f"[{host}]"
    port = f":{info['port']}" if info.get("port") else ""
    user = f"{info['user']}@" if info.get("user") else ""
    db = info.get("dbname") or ""
    return f"postgresql://{user}{host}{port}/{db}"


def _lock_key(kind: str, name: str) -> int:
    """A stable signed 64-bit advisory-lock key for (kind, name)."""
    digest = hashlib.sha256(f"certman:{kind}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _utc(value: datetime) -> datetime:
    """Times from the server come in its session time zone; the store speaks UTC."""
    return value.astimezone(UTC)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _cert_facts(cert_pem: bytes) -> tuple[str | None, datetime | None]:
    """Serial (hex) and notAfter of a leaf PEM, or ``(None, None)`` when it is not one.

    Cached in columns so fleet queries (how many serials were issued, what
    expires next) do not parse every PEM; the PEM stays authoritative.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None, None
    return format(cert.serial_number, "x"), cert.not_valid_after_utc


@dataclass(frozen=True)
class SchemaStatus:
    """The database's schema version against the code's, and what is in it."""

    url: str
    database_version: int
    code_version: int
    server_version: str
    counts: dict[str, int]

    @property
    def up_to_date(self) -> bool:
        return self.database_version == self.code_version

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "database_version": self.database_version,
            "code_version": self.code_version,
            "up_to_date": self.up_to_date,
            "server_version": self.server_version,
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class Claim:
    """Who holds (or held) a certificate or account lock, from ``certman_claims``.

    ``held``: whether the advisory lock is really held right now. A row
    whose holder was killed stays until the next holder overwrites it;
    ``held`` is then ``False`` (its lock went with the holder's session).
    """

    kind: str
    name: str
    holder: str
    claimed_at: datetime
    expires_at: datetime
    held: bool = True


class _Pool:
    """A small thread-safe pool of autocommit connections.

    Why not ``psycopg_pool``: one more dependency for ~40 lines, and we need
    to hand a connection out for a lock's whole lifetime anyway.
    """

    def __init__(self, url: str, *, max_idle: int, connect_timeout: int) -> None:
        self.url = url
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            application_name="certman",
            # Client side: notice a dead server. The SETs below: let the
            # server notice a dead client, so its advisory locks are freed.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        conn.execute(
            "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10;"
            " SET tcp_keepalives_count = 3"
        )
        return conn

    def get(self) -> tuple[psycopg.Connection[Any], bool]:
        """A connection and whether it was reused from the pool."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and not conn.broken:
                    return conn, True
        return self.connect(), False

    def put(self, conn: psycopg.Connection[Any]) -> None:
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        if healthy:
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(conn)
                    return
        with contextlib.suppress(Exception):
            conn.close()

    def discard_idle(self) -> None:
        """Close every idle connection (after a failure they are likely all dead)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


class _HeldLock:
    """One advisory lock as this process holds it: re-entrant per thread."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.conn: psycopg.Connection[Any] | None = None


_LOCKS: dict[tuple[str, int], _HeldLock] = {}
_LOCKS_GUARD = threading.Lock()


def _held_lock(url: str, key: int) -> _HeldLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get((url, key))
        if lock is None:
            lock = _LOCKS[(url, key)] = _HeldLock()
        return lock


class PostgresStore:
    """The :class:`~certman.store.base.Store` in a PostgreSQL database.

    ``url``: a libpq URL or conninfo (``postgresql://user:pw@host/db``,
    ``postgresql:///certman?host=/run/postgresql``; ``options=-csearch_path=x``
    puts the tables in schema ``x``). Nothing connects until first use.
    ``token_ttl``: how long a published HTTP-01 token is served at most.
    ``claim_lease``: how far ahead a lock's ``certman_claims`` row is marked
    as expiring (informational). ``max_idle``: pooled idle connections.

    Safe to share between threads and processes; see the module docstring for
    locks, fencing and errors. Call :meth:`close` (or use ``with``) to close
    pooled connections early; they are closed at exit anyway.
    """

    def __init__(
        self,
        url: str,
        *,
        token_ttl: timedelta = DEFAULT_TOKEN_TTL,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        max_idle: int = 32,
        connect_timeout: int = 5,
    ) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self.token_ttl = token_ttl
        self.claim_lease = claim_lease
        self._pool = _Pool(url, max_idle=max_idle, connect_timeout=connect_timeout)
        self._schema_ok = False
        # Pooled connections are closed when the store is garbage collected.
        weakref.finalize(self, self._pool.discard_idle)

    def __repr__(self) -> str:
        return f"PostgresStore({self.display_url!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle pooled connections (held locks keep theirs until released)."""
        self._pool.discard_idle()

    # -- connections and errors -------------------------------------------

    def _error(self, exc: psycopg.Error, what: str) -> StoreError:
        if isinstance(exc, pg_errors.UndefinedTable):
            return StoreError(
                f"the database at {self.display_url} has no certman schema (or an"
                f" incomplete one): run `certman db upgrade --store URL` ({what})",
                code="store-schema-missing",
                url=self.display_url,
            )
        if isinstance(exc, psycopg.OperationalError) or getattr(exc, "sqlstate", "") in (
            None,
            "",
        ):
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return StoreError(
                f"PostgreSQL store at {self.display_url} is unavailable while trying to"
                f" {what}: {reason}",
                code="store-unavailable",
                url=self.display_url,
            )
        return StoreError(
            f"PostgreSQL error from {self.display_url} while trying to {what}:"
            f" {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
            code="store-db-error",
            url=self.display_url,
            sqlstate=getattr(exc, "sqlstate", None),
        )

    def _run(
        self,
        what: str,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        retry: bool = True,
        check_schema: bool = True,
    ) -> T:
        """Run ``fn`` on a pooled connection, mapping database errors to StoreError.

        A pooled connection may have died since it was last used (the server
        restarted); when ``retry`` (the operation is idempotent) a failure on
        a reused connection is retried once on a fresh one.
        """
        if check_schema and not self._schema_ok:
            self.check_schema()
        for attempt in (1, 2):
            try:
                conn, reused = self._pool.get()
            except psycopg.Error as exc:
                self._pool.discard_idle()
                raise self._error(exc, what) from exc
            try:
                result = fn(conn)
            except psycopg.Error as exc:
                dead = conn.closed or conn.broken
                with contextlib.suppress(Exception):
                    conn.close()
                if dead:
                    self._pool.discard_idle()
                    if retry and reused and attempt == 1:
                        log.info("pooled PostgreSQL connection was dead; retrying %s", what)
                        continue
                raise self._error(exc, what) from exc
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema ----------------------------------------------------------------

    def _db_version(self, conn: psycopg.Connection[Any]) -> int:
        exists = conn.execute("SELECT to_regclass('certman_schema') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM certman_schema").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        """The schema version the database has (0: none)."""
        return self._run("read the schema version", self._db_version, check_schema=False)

    def check_schema(self) -> None:
        """Raise unless the database's schema is exactly the one this code needs."""
        have = self.schema_version()
        if have == SCHEMA_VERSION:
            self._schema_ok = True
            return
        if have == 0:
            raise StoreError(
                f"the database at {self.display_url} has no certman schema yet:"
                " run `certman db upgrade --store URL`",
                code="store-schema-missing",
                url=self.display_url,
            )
        if have < SCHEMA_VERSION:
            raise StoreError(
                f"the database at {self.display_url} has certman schema version {have},"
                f" older than this certman's {SCHEMA_VERSION}:"
                " run `certman db upgrade --store URL`",
                code="store-schema-old",
                url=self.display_url,
                database_version=have,
                code_version=SCHEMA_VERSION,
            )
        raise StoreError(
            f"the database at {self.display_url} has certman schema version {have},"
            f" newer than this certman's {SCHEMA_VERSION}: upgrade certman",
            code="store-schema-new",
            url=self.display_url,
            database_version=have,
            code_version=SCHEMA_VERSION,
        )

    def upgrade(self, target: int = SCHEMA_VERSION) -> tuple[int, int]:
        """Apply the missing migrations up to ``target``; return (before, after).

        Idempotent, and safe to run from several machines at once (a
        transaction-level advisory lock serializes them). All migrations run
        in one transaction: a failure leaves the schema as it was.
        """
        if not 0 <= target <= SCHEMA_VERSION:
            raise StoreError(
                f"no schema version {target} (this certman knows 1..{SCHEMA_VERSION})",
                code="store-schema-new",
            )

        def apply(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS certman_schema ("
                    " version integer PRIMARY KEY,"
                    " description text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                before = self._db_version(conn)
                if before > SCHEMA_VERSION:
                    raise StoreError(
                        f"the database at {self.display_url} has certman schema version"
                        f" {before}, newer than this certman's {SCHEMA_VERSION}: upgrade certman",
                        code="store-schema-new",
                        url=self.display_url,
                    )
                for version, description, sql in MIGRATIONS:
                    if before < version <= target:
                        log.info("applying certman schema migration %d: %s", version, description)
                        conn.execute(sql.encode())
                        conn.execute(
                            "INSERT INTO certman_schema (version, description) VALUES (%s, %s)",
                            (version, description),
                        )
                return before, max(before, target)

        result = self._run("upgrade the schema", apply, retry=False, check_schema=False)
        self._schema_ok = result[1] == SCHEMA_VERSION
        return result

    def status(self) -> SchemaStatus:
        """Schema version, server version and row counts (for ``certman db status``)."""
        version = self.schema_version()

        def read(conn: psycopg.Connection[Any]) -> SchemaStatus:
            server = conn.execute("SHOW server_version").fetchone()
            counts: dict[str, int] = {}
            if version == SCHEMA_VERSION:
                queries = {
                    "accounts": "SELECT count(*) FROM certman_accounts",
                    "certificates": "SELECT count(*) FROM certman_certificates"
                    " WHERE live_version IS NOT NULL",
                    "versions": "SELECT count(*) FROM certman_certificate_versions",
                    "tokens": "SELECT count(*) FROM certman_tokens WHERE expires_at > now()",
                    "claims": "SELECT count(*) FROM certman_claims",
                }
                for key, sql in queries.items():
                    row = conn.execute(sql.encode()).fetchone()
                    counts[key] = int(row[0]) if row else 0
            return SchemaStatus(
                url=self.display_url,
                database_version=version,
                code_version=SCHEMA_VERSION,
                server_version=str(server[0]) if server else "?",
                counts=counts,
            )

        return self._run("read the store status", read, check_schema=False)

    # -- accounts --------------------------------------------------------------

    def _account_key(self, directory_url: str, account_id: str) -> tuple[str, str]:
        return ca_key(directory_url), validate_name(account_id, what="account id")

    def _account_row(self, account: AccountRecord) -> dict[str, Any]:
        doc = account_doc(account)
        ca, aid = self._account_key(account.directory_url, account.account_id)
        return {
            "ca": ca,
            "aid": aid,
            "url": account.directory_url,
            "uri": account.uri,
            "status": account.status,
            "record": json.dumps(doc),
        }

    def _parse_account(self, ca: str, aid: str, doc: Any) -> AccountRecord:
        return parse_account(doc, f"{self.display_url}#accounts/{ca}/{aid}")

    def save_account(self, account: AccountRecord, key_pem: bytes) -> None:
        row = self._account_row(account)

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO certman_accounts"
                    " (ca_key, account_id, directory_url, uri, status, record)"
                    " VALUES (%(ca)s, %(aid)s, %(url)s, %(uri)s, %(status)s, %(record)s)"
                    " ON CONFLICT (ca_key, account_id) DO UPDATE SET"
                    " directory_url = excluded.directory_url, uri = excluded.uri,"
                    " status = excluded.status, record = excluded.record, saved_at = now()",
                    row,
                )
                conn.execute(
                    "INSERT INTO certman_account_keys (ca_key, account_id, key_pem)"
                    " VALUES (%s, %s, %s) ON CONFLICT (ca_key, account_id) DO UPDATE SET"
                    " key_pem = excluded.key_pem, saved_at = now()",
                    (row["ca"], row["aid"], key_pem),
                )

        self._run("save an account", write)
        log.info("saved account %s for %s", account.account_id, account.directory_url)

    def update_account(self, account: AccountRecord) -> None:
        row = self._account_row(account)

        def write(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "UPDATE certman_accounts SET directory_url = %(url)s, uri = %(uri)s,"
                " status = %(status)s, record = %(record)s, saved_at = now()"
                " WHERE ca_key = %(ca)s AND account_id = %(aid)s",
                row,
            )
            return cur.rowcount

        if self._run("update an account", write) == 0:
            raise not_found(f"account {account.account_id} for {account.directory_url}")

    def save_account_key(self, directory_url: str, account_id: str, key_pem: bytes) -> None:
        ca, aid = self._account_key(directory_url, account_id)

        def write(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "UPDATE certman_account_keys SET prev_key_pem = key_pem, key_pem = %s,"
                " saved_at = now() WHERE ca_key = %s AND account_id = %s",
                (key_pem, ca, aid),
            )
            return cur.rowcount

        # Not retried: a second run would copy the new key over the previous one.
        if self._run("save an account key", write, retry=False) == 0:
            raise not_found(f"account {account_id} for {directory_url}")

    def load_account(self, directory_url: str, account_id: str) -> AccountRecord:
        ca, aid = self._account_key(directory_url, account_id)
        row = self._run(
            "load an account",
            lambda c: c.execute(
                "SELECT record FROM certman_accounts WHERE ca_key = %s AND account_id = %s",
                (ca, aid),
            ).fetchone(),
        )
        if row is None:
            raise not_found(f"account {account_id} for {directory_url}")
        return self._parse_account(ca, aid, row[0])

    def load_account_key(self, directory_url: str, account_id: str) -> bytes:
        ca, aid = self._account_key(directory_url, account_id)
        row = self._run(
            "load an account key",
            lambda c: c.execute(
                "SELECT key_pem FROM certman_account_keys WHERE ca_key = %s AND account_id = %s",
                (ca, aid),
            ).fetchone(),
        )
        if row is None:
            raise not_found(f"key of account {account_id} for {directory_url}")
        return bytes(row[0])

    def load_previous_account_key(self, directory_url: str, account_id: str) -> bytes | None:
        """The key replaced by the last :meth:`save_account_key`, if any."""
        ca, aid = self._account_key(directory_url, account_id)
        row = self._run(
            "load an account key",
            lambda c: c.execute(
                "SELECT prev_key_pem FROM certman_account_keys"
                " WHERE ca_key = %s AND account_id = %s",
                (ca, aid),
            ).fetchone(),
        )
        return bytes(row[0]) if row and row[0] is not None else None

    def list_accounts(self, directory_url: str | None = None) -> list[AccountRecord]:
        if directory_url is None:
            rows = self._run(
                "list accounts",
                lambda c: c.execute(
                    "SELECT ca_key, account_id, record FROM certman_accounts"
                ).fetchall(),
            )
        else:
            ca = ca_key(directory_url)
            rows = self._run(
                "list accounts",
                lambda c: c.execute(
                    "SELECT ca_key, account_id, record FROM certman_accounts"
                    " WHERE ca_key = %s AND directory_url = %s",
                    (ca, directory_url),
                ).fetchall(),
            )
        return sorted_accounts([self._parse_account(r[0], r[1], r[2]) for r in rows])

    def find_account(self, directory_url: str) -> AccountRecord | None:
        return newest_valid_account(self.list_accounts(directory_url))

    # -- certificates ----------------------------------------------------------

    @staticmethod
    def _meta_json(meta: CertificateMeta) -> str:
        return json.dumps(meta_doc(meta))

    def _promote(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        files: CertificateFiles,
        meta_json: str | None,
        *,
        version: int | None = None,
        make_live: bool = True,
        saved_at: datetime | None = None,
    ) -> tuple[int, datetime]:
        """Insert a version, make it live and save meta: one transaction."""
        serial, not_after = _cert_facts(files.cert_pem)
        with conn.transaction():
            conn.execute(
                "INSERT INTO certman_certificates (name) VALUES (%s) ON CONFLICT DO NOTHING",
                (name,),
            )
            row = conn.execute(
                "SELECT last_version FROM certman_certificates WHERE name = %s FOR UPDATE",
                (name,),
            ).fetchone()
            assert row is not None
            number = version if version is not None else int(row[0]) + 1
            saved = conn.execute(
                "INSERT INTO certman_certificate_versions (name, version, cert_pem, chain_pem,"
                " fullchain_pem, privkey_pem, serial, not_after, saved_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()))"
                " RETURNING saved_at",
                (
                    name,
                    number,
                    files.cert_pem,
                    files.chain_pem,
                    files.fullchain_pem,
                    files.privkey_pem,
                    serial,
                    not_after,
                    saved_at,
                ),
            ).fetchone()
            assert saved is not None
            conn.execute(
                "UPDATE certman_certificates SET last_version = greatest(last_version, %s),"
                " live_version = CASE WHEN %s THEN %s ELSE live_version END,"
                " updated_at = now() WHERE name = %s",
                (number, make_live, number, name),
            )
            if meta_json is not None:
                self._upsert_meta(conn, name, meta_json)
        return number, _utc(saved[0])

    @staticmethod
    def _upsert_meta(conn: psycopg.Connection[Any], name: str, meta_json: str) -> None:
        conn.execute(
            "INSERT INTO certman_certificate_meta (name, meta) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET meta = excluded.meta, updated_at = now()",
            (name, meta_json),
        )

    def save_certificate(
        self, name: str, files: CertificateFiles, meta: CertificateMeta | None = None
    ) -> CertificateVersion:
        validate_name(name)
        if meta is not None and meta.name != name:
            raise StoreError(
                f"meta is for {meta.name!r}, not {name!r}", code="store-bad-name", name=name
            )
        meta_json = self._meta_json(meta) if meta is not None else None
        if not self._schema_ok:
            self.check_schema()
        with self._locked("cert", name, None, f"certificate {name!r}") as conn:
            # The promotion runs on the lock's own session: if the lock was
            # lost, so is this session, and nothing is written (fencing).
            try:
                version, saved_at = self._promote(conn, name, files, meta_json)
            except psycopg.Error as exc:
                raise self._error(exc, f"save certificate {name!r}") from exc
        log.info("certificate %s: version %d is live", name, version)
        return CertificateVersion(name=name, version=version, files=files, saved_at=saved_at)

    def import_version(
        self,
        name: str,
        version: int,
        files: CertificateFiles,
        *,
        live: bool,
        saved_at: datetime | None = None,
    ) -> bool:
        """Store version ``version`` of ``name`` as is (for ``certman migrate``).

        Keeps the source's numbering; ``live`` makes it the live version.
        Returns ``False`` when that exact version is already stored (so a
        migration can be re-run), raises ``store-conflict`` when a different
        one is.
        """
        validate_name(name)
        if not isinstance(version, int) or version < 1:
            raise StoreError(f"bad version {version!r}", code="store-bad-value", name=name)
        if not self._schema_ok:
            self.check_schema()
        with self._locked("cert", name, None, f"certificate {name!r}") as conn:
            try:
                row = conn.execute(
                    "SELECT cert_pem, chain_pem, fullchain_pem, privkey_pem"
                    " FROM certman_certificate_versions WHERE name = %s AND version = %s",
                    (name, version),
                ).fetchone()
                if row is not None:
                    if CertificateFiles(*(bytes(x) for x in row)) != files:
                        raise StoreError(
                            f"certificate {name!r} version {version} already exists in"
                            f" {self.display_url} with different content",
                            code="store-conflict",
                            name=name,
                            version=version,
                        )
                    if live:
                        conn.execute(
                            "UPDATE certman_certificates SET live_version = %s WHERE name = %s"
                            " AND live_version IS DISTINCT FROM %s",
                            (version, name, version),
                        )
                    return False
                self._promote(
                    conn, name, files, None, version=version, make_live=live, saved_at=saved_at
                )
            except psycopg.Error as exc:
                raise self._error(exc, f"import certificate {name!r}") from exc
        return True

    def _version_from_row(self, name: str, row: Any) -> CertificateVersion:
        version, cert, chain, full, key, saved_at = row
        return CertificateVersion(
            name=name,
            version=int(version),
            files=CertificateFiles(bytes(cert), bytes(chain), bytes(full), bytes(key)),
            saved_at=_utc(saved_at),
        )

    def load_live(self, name: str) -> CertificateVersion:
        validate_name(name)
        row = self._run(
            "load a certificate",
            lambda c: c.execute(
                "SELECT c.live_version, v.version, v.cert_pem, v.chain_pem, v.fullchain_pem,"
                " v.privkey_pem, v.saved_at FROM certman_certificates c"
                " LEFT JOIN certman_certificate_versions v"
                " ON v.name = c.name AND v.version = c.live_version"
                " WHERE c.name = %s",
                (name,),
            ).fetchone(),
        )
        if row is None or row[0] is None:
            raise not_found(f"certificate {name!r}", name=name)
        if row[1] is None:
            raise corrupt(
                f"{self.display_url}#certificates/{name}",
                f"live version {row[0]} is missing",
            )
        return self._version_from_row(name, row[1:])

    def load_version(self, name: str, version: int) -> CertificateVersion:
        validate_name(name)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise not_found(f"version {version!r} of certificate {name!r}", name=name)
        row = self._run(
            "load a certificate version",
            lambda c: c.execute(
                "SELECT version, cert_pem, chain_pem, fullchain_pem, privkey_pem, saved_at"
                " FROM certman_certificate_versions WHERE name = %s AND version = %s",
                (name, version),
            ).fetchone(),
        )
        if row is None:
            raise not_found(
                f"version {version} of certificate {name!r}", name=name, version=version
            )
        return self._version_from_row(name, row)

    def list_versions(self, name: str) -> list[int]:
        validate_name(name)
        rows = self._run(
            "list certificate versions",
            lambda c: c.execute(
                "SELECT version FROM certman_certificate_versions WHERE name = %s ORDER BY version",
                (name,),
            ).fetchall(),
        )
        return [int(r[0]) for r in rows]

    def list_certificates(self) -> list[str]:
        rows = self._run(
            "list certificates",
            lambda c: c.execute(
                "SELECT name FROM certman_certificates WHERE live_version IS NOT NULL ORDER BY name"
            ).fetchall(),
        )
        return [str(r[0]) for r in rows]

    def list_lineages(self) -> list[str]:
        """Every lineage name, including those with meta but no certificate yet."""
        rows = self._run(
            "list certificates",
            lambda c: c.execute("SELECT name FROM certman_certificates ORDER BY name").fetchall(),
        )
        return [str(r[0]) for r in rows]

    def live_versions(self) -> dict[str, int]:
        """``{name: live version}`` for every lineage with one, in one query (for export)."""
        rows = self._run(
            "list certificates",
            lambda c: c.execute(
                "SELECT name, live_version FROM certman_certificates WHERE live_version IS NOT NULL"
            ).fetchall(),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def issued_serials(self) -> list[tuple[str, int, str | None]]:
        """``(name, version, serial hex)`` of every stored version (the history)."""
        rows = self._run(
            "read the certificate history",
            lambda c: c.execute(
                "SELECT name, version, serial FROM certman_certificate_versions"
                " ORDER BY name, version"
            ).fetchall(),
        )
        return [(str(r[0]), int(r[1]), r[2]) for r in rows]

    def delete_certificate(self, name: str) -> None:
        validate_name(name)
        if not self._schema_ok:
            self.check_schema()
        with self._locked("cert", name, None, f"certificate {name!r}") as conn:
            try:
                cur = conn.execute("DELETE FROM certman_certificates WHERE name = %s", (name,))
            except psycopg.Error as exc:
                raise self._error(exc, f"delete certificate {name!r}") from exc
        if cur.rowcount:
            log.info("certificate %s deleted", name)

    def certificate_location(self, name: str) -> str:
        return f"{self.display_url}#certificate={validate_name(name)}"

    def save_meta(self, meta: CertificateMeta) -> None:
        validate_name(meta.name)
        meta_json = self._meta_json(meta)

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO certman_certificates (name) VALUES (%s) ON CONFLICT DO NOTHING",
                    (meta.name,),
                )
                self._upsert_meta(conn, meta.name, meta_json)

        self._run("save certificate meta", write)

    def load_meta(self, name: str) -> CertificateMeta:
        meta = self.find_meta(name)
        if meta is None:
            raise not_found(f"meta of certificate {name!r}", name=name)
        return meta

    def find_meta(self, name: str) -> CertificateMeta | None:
        validate_name(name)
        row = self._run(
            "load certificate meta",
            lambda c: c.execute(
                "SELECT meta FROM certman_certificate_meta WHERE name = %s", (name,)
            ).fetchone(),
        )
        if row is None:
            return None
        return parse_meta(row[0], name, f"{self.display_url}#meta/{name}")

    # -- tokens ----------------------------------------------------------------

    def put_token(self, token: str, key_authorization: str) -> None:
        if not is_valid_token(token):
            raise StoreError(f"invalid HTTP-01 token {token!r}", code="store-bad-name")
        ttl = self.token_ttl

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO certman_tokens (token, key_authorization, expires_at)"
                    " VALUES (%s, %s, now() + %s) ON CONFLICT (token) DO UPDATE SET"
                    " key_authorization = excluded.key_authorization,"
                    " created_at = now(), expires_at = excluded.expires_at",
                    (token, key_authorization, ttl),
                )
                # A replaced value must not linger in responders' caches.
                conn.execute("SELECT pg_notify(%s, %s)", (_NOTIFY_CHANNEL, token))
                # Garbage-collect tokens left by crashed workers (index scan).
                conn.execute("DELETE FROM certman_tokens WHERE expires_at < now()")

        self._run("publish an HTTP-01 token", write)

    def get_token(self, token: str) -> str | None:
        if not is_valid_token(token):
            return None
        row = self._run(
            "read an HTTP-01 token",
            lambda c: c.execute(
                "SELECT key_authorization FROM certman_tokens"
                " WHERE token = %s AND expires_at > now()",
                (token,),
            ).fetchone(),
        )
        return str(row[0]) if row else None

    def delete_token(self, token: str) -> None:
        if not is_valid_token(token):
            return

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM certman_tokens WHERE token = %s", (token,))
                conn.execute("SELECT pg_notify(%s, %s)", (_NOTIFY_CHANNEL, token))

        self._run("withdraw an HTTP-01 token", write)

    # -- locks -----------------------------------------------------------------

    def lock_certificate(
        self, name: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        validate_name(name)
        return self._lock_none("cert", name, timeout, f"certificate {name!r}")

    def try_lock_certificate(self, name: str) -> contextlib.AbstractContextManager[bool]:
        validate_name(name)
        return self._try_locked("cert", name)

    def lock_account(
        self, directory_url: str, account_id: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        ca, aid = self._account_key(directory_url, account_id)
        return self._lock_none("account", f"{ca}/{aid}", timeout, f"account {aid}")

    def try_lock_account(
        self, directory_url: str, account_id: str
    ) -> contextlib.AbstractContextManager[bool]:
        ca, aid = self._account_key(directory_url, account_id)
        return self._try_locked("account", f"{ca}/{aid}")

    def claims(self) -> list[Claim]:
        """Lock holders as recorded in ``certman_claims`` (oldest first), with ``held``."""

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], set[int]]:
            rows = conn.execute(
                "SELECT kind, name, holder, claimed_at, expires_at FROM certman_claims"
                " ORDER BY claimed_at"
            ).fetchall()
            # A bigint advisory key shows in pg_locks as classid (high 32 bits),
            # objid (low 32 bits) and objsubid 1.
            locks = conn.execute(
                "SELECT classid::bigint, objid::bigint FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
            held = set()
            for high, low in locks:
                value = (int(high) << 32) | int(low)
                held.add(value - (1 << 64) if value >= 1 << 63 else value)
            return rows, held

        rows, held = self._run("list claims", read)
        return [
            Claim(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                _utc(r[3]),
                _utc(r[4]),
                held=_lock_key(str(r[0]), str(r[1])) in held,
            )
            for r in rows
        ]

    @contextlib.contextmanager
    def _lock_none(self, kind: str, name: str, timeout: float | None, what: str) -> Iterator[None]:
        with self._locked(kind, name, timeout, what):
            yield

    @contextlib.contextmanager
    def _locked(
        self, kind: str, name: str, timeout: float | None, what: str
    ) -> Iterator[psycopg.Connection[Any]]:
        lock = _held_lock(self.url, _lock_key(kind, name))
        if not self._acquire(lock, kind, name, timeout):
            raise StoreError(
                f"{what} is locked by another certman run", code="store-locked", name=name
            )
        try:
            assert lock.conn is not None
            yield lock.conn
        finally:
            self._release(lock, kind, name)

    @contextlib.contextmanager
    def _try_locked(self, kind: str, name: str) -> Iterator[bool]:
        lock = _held_lock(self.url, _lock_key(kind, name))
        got = self._acquire(lock, kind, name, 0)
        try:
            yield got
        finally:
            if got:
                self._release(lock, kind, name)

    def _acquire(self, lock: _HeldLock, kind: str, name: str, timeout: float | None) -> bool:
        if not self._schema_ok:
            self.check_schema()
        started = time.monotonic()
        if timeout is None:
            got = lock.rlock.acquire()
        elif timeout <= 0:
            got = lock.rlock.acquire(blocking=False)
        else:
            got = lock.rlock.acquire(timeout=timeout)
        if not got:
            return False
        if lock.depth > 0:
            lock.depth += 1
            return True
        remaining = timeout
        if timeout is not None and timeout > 0:
            # What the wait for another thread of this process left of the timeout.
            remaining = max(0.001, timeout - (time.monotonic() - started))
        try:
            conn = self._lock_session(kind, name, remaining)
        except BaseException:
            lock.rlock.release()
            raise
        if conn is None:
            lock.rlock.release()
            return False
        lock.conn = conn
        lock.depth = 1
        return True

    def _lock_session(
        self, kind: str, name: str, timeout: float | None
    ) -> psycopg.Connection[Any] | None:
        """A session holding the advisory lock, or ``None`` if it is taken."""
        key = _lock_key(kind, name)
        what = f"lock {kind} {name!r}"
        for attempt in (1, 2):
            try:
                conn, reused = self._pool.get()
            except psycopg.Error as exc:
                self._pool.discard_idle()
                raise self._error(exc, what) from exc
            try:
                if timeout is not None and timeout <= 0:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    got = bool(row and row[0])
                elif timeout is None:
                    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                    got = True
                else:
                    # lock_timeout bounds advisory lock waits too.
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, int(timeout * 1000))}ms",),
                    )
                    try:
                        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                        got = True
                    except pg_errors.LockNotAvailable:
                        got = False
                    conn.execute("SELECT set_config('lock_timeout', '0', false)")
                if got:
                    conn.execute(
                        "INSERT INTO certman_claims (kind, name, holder, expires_at)"
                        " VALUES (%s, %s, %s, now() + %s) ON CONFLICT (kind, name) DO UPDATE"
                        " SET holder = excluded.holder, claimed_at = now(),"
                        " expires_at = excluded.expires_at",
                        (kind, name, _holder(), self.claim_lease),
                    )
            except psycopg.Error as exc:
                dead = conn.closed or conn.broken
                with contextlib.suppress(Exception):
                    conn.close()  # closing the session also drops a lock it got
                if dead:
                    self._pool.discard_idle()
                    if reused and attempt == 1:
                        continue
                raise self._error(exc, what) from exc
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            if not got:
                self._pool.put(conn)
                return None
            log.debug("locked %s %s", kind, name)
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, lock: _HeldLock, kind: str, name: str) -> None:
        try:
            lock.depth -= 1
            if lock.depth == 0 and lock.conn is not None:
                conn, lock.conn = lock.conn, None
                try:
                    conn.execute(
                        "DELETE FROM certman_claims WHERE kind = %s AND name = %s AND holder = %s",
                        (kind, name, _holder()),
                    )
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(kind, name),))
                except psycopg.Error as exc:
                    # The session is gone, and with it the lock: nothing to undo.
                    log.warning("releasing lock on %s %s: %s", kind, name, exc)
                    with contextlib.suppress(Exception):
                        conn.close()
                else:
                    self._pool.put(conn)
        finally:
            lock.rlock.release()


class CachedTokenStore:
    """A :class:`~certman.challenges.http01.TokenStore` over a PostgresStore, for responders.

    Why a cache at all: the CA fetches each token from several vantage
    points within a second or two, and a busy responder should not hit the
    database for each. Why it cannot serve a stale token: only *found* tokens
    are cached, for at most ``ttl`` seconds (default 1 s), and a listener
    thread ``LISTEN``\\ s on the channel the store ``NOTIFY``\\ s on every
    ``put_token``/``delete_token``, dropping the entry as soon as the
    notification arrives. While the listener is not connected, nothing is
    cached at all. A generation counter stops a lookup that raced with a
    deletion from caching the value it read before the deletion.

    ``put``/``delete`` go straight to the store. Thread safe. Call
    :meth:`start` (or use ``with``) to run the listener; without it the cache
    stays off and every ``get`` reads the database.
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hits = 0
        self.misses = 0

    @property
    def listening(self) -> bool:
        """Whether invalidations are being received (and so the cache is on)."""
        return self._listening.is_set()

    def start(self, wait: float = 5.0) -> None:
        """Start the listener; waits up to ``wait`` s for it to connect."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._listen, name="certman-token-cache", daemon=True
        )
        self._thread.start()
        self._listening.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> CachedTokenStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def generation(self) -> int:
        """Bumped on every invalidation (a notification, a local put/delete, a reconnect)."""
        with self._lock:
            return self._generation

    def _invalidate(self, token: str | None) -> None:
        with self._lock:
            self._generation += 1
            if token is None:
                self._cache.clear()
            else:
                self._cache.pop(token, None)

    def _listen(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                conn = self.store._pool.connect()
            except psycopg.Error as exc:
                log.warning("token cache: cannot listen for invalidations: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                conn.execute(f"LISTEN {_NOTIFY_CHANNEL}")
                self._invalidate(None)  # anything cached before may have missed a notify
                self._listening.set()
                delay = 0.5
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        self._invalidate(notify.payload)
            except psycopg.Error as exc:
                log.warning("token cache: invalidation listener lost: %s", exc)
            finally:
                self._listening.clear()
                self._invalidate(None)
                with contextlib.suppress(Exception):
                    conn.close()
            self._stop.wait(delay)

    def put(self, token: str, key_authorization: str) -> None:
        self._invalidate(token)
        self.store.put_token(token, key_authorization)

    def delete(self, token: str) -> None:
        self.store.delete_token(token)
        self._invalidate(token)

    def get(self, token: str) -> str | None:
        if not is_valid_token(token):
            return None
        now = self._clock()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None and hit[1] > now and self._listening.is_set():
                self.hits += 1
                return hit[0]
            generation = self._generation
        value = self.store.get_token(token)
        with self._lock:
            self.misses += 1
            if value is not None and self._listening.is_set() and generation == self._generation:
                self._cache[token] = (value, now + self.ttl)
        return value


def _conforms(store: PostgresStore) -> Store:
    # mypy proves here that PostgresStore implements the Store protocol in full.
    return store
