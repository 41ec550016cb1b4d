"""CertificateManager: the library's front door for issuing and renewing certificates.

One manager talks to one CA (a directory URL) with one account, over one
:class:`~certman.store.base.Store`. It turns "these names" into stored,
live certificates and keeps them renewed:

- :meth:`CertificateManager.issue` gets one lineage (a set of names) and
  :meth:`CertificateManager.issue_many` many of them through a worker pool;
- :meth:`CertificateManager.renew_due` renews what is due (ARI window, else
  the lifetime rule, with failure backoff) and :meth:`renew_all` everything;
- account helpers (:meth:`register_account`, :meth:`rollover_account`, ...)
  keep the store and the CA in step.

How it stays safe at fleet scale:

- **One ACME client per worker thread**, all sharing one fetched
  :class:`~certman.client.Directory` (``AcmeClient`` is not thread safe,
  the directory is immutable).
- **A local rate limit** per CA account (:class:`RateLimits`, token buckets)
  so a big batch stays inside the CA's published limits instead of
  hitting them and failing half-way.
- **A lock per lineage** (``store.try_lock_certificate``): two processes
  (or two machines on a shared store) never order the same lineage at once;
  the second one skips it and, having re-read the meta, does not repeat a
  renewal the first just made.
- **Failures are isolated** per certificate and recorded in its meta (the
  error, its code, consecutive failures, the next retry time from
  :mod:`certman.renewal`'s backoff); other certificates carry on.
- **The live certificate is only ever replaced by a complete new one**:
  nothing is written before the CA has returned the certificate, and the
  store switches ``live`` only after the new version is fully on disk.

The manager never prints and never exits. Progress is reported through an
optional callback; results come back as :class:`Outcome` values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from os import PathLike
from types import TracebackType
from typing import Any, Literal

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certman.challenges.base import Solver
from certman.client import (
    AcmeClient,
    Directory,
    ExternalAccountBinding,
    fetch_directory,
    resolve_directory_url,
)
from certman.client.account import Account
from certman.client.ari import cert_id, fetch_renewal_info
from certman.client.order import IssuedCertificate, RevocationReason
from certman.errors import AcmeError, CertmanError, ConfigError, RenewalError, StoreError
from certman.hooks import DEFAULT_TIMEOUT as HOOK_TIMEOUT
from certman.hooks import HookResult, HookSession
from certman.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    PrivateKey,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
)
from certman.renewal import (
    DEFAULT_BACKOFF,
    BackoffPolicy,
    RandomSource,
    RenewalDecision,
    RenewalInfo,
    RenewalState,
    ari_check_due,
    decide,
    meta_updates,
    record_ari_error,
    record_failure,
    record_success,
    state_from_meta,
)
from certman.store.base import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    Store,
    account_id_for_url,
    validate_name,
)

__all__ = [
    "DEFAULT_LIMITS",
    "UNLIMITED",
    "AccountStatus",
    "CertificateManager",
    "CertificateStatus",
    "IssueRequest",
    "Outcome",
    "OutcomeStatus",
    "RateLimits",
    "RunReport",
    "SolverSpec",
    "TokenBucket",
    "certificate_status",
    "lineage_name",
    "list_status",
]

log = logging.getLogger(__name__)

OutcomeStatus = Literal[
    "issued",
    "renewed",
    "dry-run",
    "not-due",
    "failed",
    "locked",
    "skipped",
    "deferred",
    "revoked",
]
"""What happened to one lineage in a run.

- ``issued`` / ``renewed``: a new certificate is live;
- ``dry-run``: the CA issued one but nothing was stored (``dry_run=True``);
- ``not-due``: nothing to do yet (``Outcome.reason`` says until when);
- ``failed``: the attempt failed (``Outcome.error`` / ``error_code``);
- ``locked``: another process or thread holds the lineage's lock (it is
  being renewed there);
- ``skipped``: another process renewed it during this run (forced runs);
- ``deferred``: the local rate limit has no room; tried again next run;
- ``revoked``: :meth:`CertificateManager.revoke` revoked its live certificate.
"""

ProgressCallback = Callable[["Outcome", int, int], None]
"""``progress(outcome, done, total)``, called once per lineage as it finishes,
from the worker thread that finished it."""


# -- rate limiting -------------------------------------------------------------


class TokenBucket:
    """A thread-safe token bucket: ``capacity`` tokens, refilled at ``rate`` per second.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests. A
    bucket never refuses forever: :meth:`acquire` waits up to ``max_wait``
    seconds for a token and returns False when it would have to wait longer
    (so the caller can defer instead of blocking a whole run).
    """

    def __init__(
        self,
        capacity: float,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity < 1 or rate <= 0:
            raise ConfigError(
                "a rate limit needs capacity >= 1 and a positive refill rate",
                code="invalid-rate-limit",
            )
        self.capacity = float(capacity)
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        with self._lock:
            self._refill()
            return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def acquire(self, max_wait: float = 0.0) -> bool:
        """Take one token, waiting up to ``max_wait`` seconds; False if none in time."""
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.rate
                if wait > max_wait:
                    return False
            self._sleep(wait)
            max_wait -= wait


@dataclass(frozen=True)
class RateLimits:
    """Local limits, per CA account, applied before each request of that kind.

    Each is ``(burst, per_seconds)``: at most ``burst`` at once, refilled
    evenly so that ``burst`` more are allowed every ``per_seconds``.
    ``max_wait`` is how long a worker may wait for room before the lineage
    is reported ``deferred`` (left for the next run, not counted as failed).

    The defaults (:data:`DEFAULT_LIMITS`) sit below Let's Encrypt's published
    limits (https://letsencrypt.org/docs/rate-limits/): new orders 300 per
    3 hours per account -> 250 per 3 hours here; new accounts 10 per 3 hours
    per IP address -> 5 per 3 hours here. Renewals that carry ARI's
    ``replaces`` are exempt at Let's Encrypt but are still counted here, to
    be safe with CAs that do not exempt them. The limits are per process:
    several processes on one account share the CA's budget, so lower them
    (or run one ``certman renew``) when fanning out.
    """

    new_orders: tuple[int, float] | None = (250, 3 * 3600.0)
    new_accounts: tuple[int, float] | None = (5, 3 * 3600.0)
    max_wait: float = 60.0

    def bucket(self, which: Literal["new_orders", "new_accounts"]) -> TokenBucket | None:
        limit = getattr(self, which)
        if limit is None:
            return None
        burst, per = limit
        return TokenBucket(burst, burst / per)


DEFAULT_LIMITS = RateLimits()
"""Safe defaults, inside Let's Encrypt's published limits (see :class:`RateLimits`)."""

UNLIMITED = RateLimits(new_orders=None, new_accounts=None)
"""No local rate limit at all (private CAs, tests, benchmarks)."""


# -- solvers -------------------------------------------------------------------


@dataclass(frozen=True)
class SolverSpec:
    """How to answer challenges, as a value that can be stored and rebuilt.

    ``kind``: ``"standalone"`` (options ``host``, ``port``), ``"webroot"``
    (``path``), ``"dns-hook"`` (``command``, optional ``timeout``,
    ``propagation_wait``) or ``"http01-store"`` (no options: HTTP-01 tokens
    are published in the manager's store and answered by ``certman
    serve-http01`` or the WSGI app on any node, for cluster mode). Stored in
    the lineage's meta at issue time so that an unattended ``renew`` answers
    the same way.
    """

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def standalone(cls, host: str = "", port: int = 80) -> SolverSpec:
        return cls("standalone", {"host": host, "port": int(port)})

    @classmethod
    def webroot(cls, path: str | PathLike[str]) -> SolverSpec:
        return cls("webroot", {"path": str(path)})

    @classmethod
    def dns_hook(cls, command: str, *, propagation_wait: float = 0.0) -> SolverSpec:
        return cls("dns-hook", {"command": command, "propagation_wait": propagation_wait})

    @classmethod
    def http01_store(cls) -> SolverSpec:
        """Publish HTTP-01 tokens in the store, for responders on every node (cluster mode)."""
        return cls("http01-store", {})

    def key(self) -> str:
        return self.kind + json.dumps(dict(self.options), sort_keys=True)

    def build(self, store: Store | None = None) -> Solver:
        """A new solver for this spec; ``ConfigError`` for an unknown or bad spec.

        ``store``: where an ``"http01-store"`` solver publishes its tokens.
        """
        opts = dict(self.options)
        if self.kind == "http01-store":
            if store is None:
                raise ConfigError(
                    "the http01-store solver needs the store to publish tokens in",
                    code="invalid-solver",
                )
            from certman.challenges.http01 import StoreTokenStore, TokenStoreSolver

            return TokenStoreSolver(StoreTokenStore(store))
        try:
            if self.kind == "standalone":
                from certman.challenges.server import StandaloneSolver

                return StandaloneSolver(str(opts.get("host", "")), int(opts.get("port", 80)))
            if self.kind == "webroot":
                from certman.challenges.webroot import WebrootSolver

                return WebrootSolver(str(opts["path"]))
            if self.kind == "dns-hook":
                from certman.challenges.dns_hook import DnsHookSolver

                return DnsHookSolver(
                    str(opts["command"]),
                    timeout=float(opts.get("timeout", 120.0)),
                    propagation_wait=float(opts.get("propagation_wait", 0.0)),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"bad {self.kind} solver settings: {exc!r}", code="invalid-solver"
            ) from exc
        raise ConfigError(
            f"unknown solver {self.kind!r}: pass a Solver to the manager to renew it",
            code="invalid-solver",
        )


class _SolverPool:
    """Solvers built from specs, shared by all workers of one run.

    Standalone responders are kept listening for the whole run (entered as
    context managers on first use): concurrent orders must share the one
    listener on a port, and re-binding per order would only cost time.
    """

    def __init__(self, store: Store | None = None) -> None:
        self._lock = threading.Lock()
        self._solvers: dict[str, Solver] = {}
        self._stack = contextlib.ExitStack()
        self._store = store

    def get(self, spec: SolverSpec) -> Solver:
        key = spec.key()
        with self._lock:
            solver = self._solvers.get(key)
            if solver is None:
                solver = spec.build(self._store)
                if isinstance(solver, contextlib.AbstractContextManager):
                    self._stack.enter_context(solver)
                self._solvers[key] = solver
            return solver

    def close(self) -> None:
        with self._lock:
            self._stack.close()
            self._solvers.clear()


# -- values --------------------------------------------------------------------


@dataclass(frozen=True)
class IssueRequest:
    """One lineage to issue with :meth:`CertificateManager.issue_many`.

    ``name`` defaults to :func:`lineage_name` of the first name. ``solver``
    is a :class:`SolverSpec` (stored, reusable by ``renew``) or a Solver
    object (used as is; renewals then need the manager's ``solver``);
    ``None`` means the manager's default. Hooks are stored in the lineage's
    meta and run again by every renewal.
    """

    names: tuple[str, ...]
    name: str | None = None
    key_type: str = DEFAULT_KEY_TYPE.value
    profile: str | None = None
    preferred_chain: str | None = None
    solver: SolverSpec | Solver | None = None
    pre_hooks: tuple[str, ...] = ()
    deploy_hooks: tuple[str, ...] = ()
    post_hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one lineage (see :data:`OutcomeStatus`).

    ``reason`` is one line for humans; ``error_code`` a ``CertmanError``
    code when ``status == "failed"``. ``next_renewal`` / ``renewal_source``
    come from the renewal decision (``ari``, ``lifetime``, ``backoff``...).
    ``hooks`` are the deploy hooks run for this lineage.
    """

    name: str
    status: OutcomeStatus
    names: tuple[str, ...] = ()
    reason: str = ""
    error_code: str | None = None
    version: int | None = None
    serial: str | None = None
    not_after: datetime | None = None
    next_renewal: datetime | None = None
    renewal_source: str | None = None
    location: str | None = None
    replaced: str | None = None
    duration: float = 0.0
    hooks: tuple[HookResult, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 strings)."""
        return {
            "name": self.name,
            "status": self.status,
            "names": list(self.names),
            "reason": self.reason,
            "error_code": self.error_code,
            "version": self.version,
            "serial": self.serial,
            "not_after": _iso(self.not_after),
            "next_renewal": _iso(self.next_renewal),
            "renewal_source": self.renewal_source,
            "location": self.location,
            "replaces": self.replaced,
            "duration": round(self.duration, 3),
            "hooks": [h.to_dict() for h in self.hooks],
        }


@dataclass(frozen=True)
class RunReport:
    """The result of :meth:`CertificateManager.renew_due` / :meth:`issue_many`.

    ``hooks`` holds every hook result of the run (pre, deploy, post);
    ``ok`` is False when any lineage failed. A failing hook is reported in
    ``hook_failures`` but does not make the run fail.
    """

    outcomes: tuple[Outcome, ...]
    hooks: tuple[HookResult, ...] = ()
    duration: float = 0.0
    dry_run: bool = False

    def by_status(self, *statuses: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    @property
    def renewed(self) -> list[Outcome]:
        return self.by_status("renewed", "issued", "dry-run")

    @property
    def failed(self) -> list[Outcome]:
        return self.by_status("failed")

    @property
    def not_due(self) -> list[Outcome]:
        return self.by_status("not-due")

    @property
    def hook_failures(self) -> list[HookResult]:
        return [h for h in self.hooks if not h.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "certificates": [o.to_dict() for o in self.outcomes],
            "hooks": [h.to_dict() for h in self.hooks],
        }


@dataclass(frozen=True)
class AccountStatus:
    """The account in the store, and (when asked) what the CA says about it.

    Never holds key material: ``key_thumbprint`` is the public key's RFC 7638
    thumbprint.
    """

    record: AccountRecord
    key_type: str
    key_thumbprint: str = ""
    remote: Account | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "account_id": r.account_id,
            "directory_url": r.directory_url,
            "uri": r.uri,
            "contact": list(r.contact),
            "status": self.remote.status if self.remote else r.status,
            "stored_status": r.status,
            "terms_of_service_agreed": r.terms_of_service_agreed,
            "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at),
            "key_type": self.key_type,
            "key_thumbprint": self.key_thumbprint,
            "eab_key_id": r.extra.get("eab_key_id"),
        }


@dataclass(frozen=True)
class CertificateStatus:
    """One lineage as ``certman list`` shows it (computed offline, from the store)."""

    name: str
    names: tuple[str, ...]
    issuer: str | None
    not_before: datetime | None
    not_after: datetime | None
    days_left: float | None
    key_type: str | None
    profile: str | None
    serial: str | None
    version: int | None
    location: str
    last_error: str | None
    last_error_code: str | None
    consecutive_failures: int
    last_success_at: datetime | None
    next_renewal: datetime | None
    renewal_source: str | None
    renewal_due: bool
    renewal_reason: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "names": list(self.names),
            "issuer": self.issuer,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "key_type": self.key_type,
            "profile": self.profile,
            "serial": self.serial,
            "version": self.version,
            "location": self.location,
            "last_error": self.last_error,
            "last_error_code": self.last_error_code,
            "consecutive_failures": self.consecutive_failures,
            "last_success_at": _iso(self.last_success_at),
            "next_renewal": _iso(self.next_renewal),
            "renewal_source": self.renewal_source,
            "renewal_due": self.renewal_due,
            "renewal_reason": self.renewal_reason,
            "error": self.error,
        }


# -- helpers -------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def lineage_name(names: Sequence[str]) -> str:
    """The default lineage name for ``names``: the first name, made path safe.

    ``*.example.org`` -> ``example.org``; an IPv6 address's ``:`` become
    ``-``. Raises ``ConfigError`` when ``names`` is empty.
    """
    if not names:
        raise ConfigError("at least one name is needed", code="no-names")
    first = names[0].strip().lower().removeprefix("*.")
    cleaned = _UNSAFE.sub("-", first).strip(".-") or "certificate"
    if not re.match(r"[A-Za-z0-9_]", cleaned):
        cleaned = "_" + cleaned
    return validate_name(cleaned.replace("..", "."))


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def _error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, CertmanError) else "internal-error"


def _retry_after_of(exc: BaseException, now: datetime) -> datetime | None:
    if not isinstance(exc, CertmanError):
        return None
    value = exc.details.get("retry_after")
    if isinstance(value, int | float):
        return now + timedelta(seconds=float(value))
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _hooks_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    return tuple(v for v in value if v and v.strip())


@dataclass
class _Live:
    """The live certificate of a lineage, parsed once."""

    cert: x509.Certificate
    version: int
    pem: bytes


# -- the manager ---------------------------------------------------------------


class CertificateManager:
    """Issues and renews certificates for one CA account over one store.

    ``server`` is a directory URL or preset (default Let's Encrypt
    production; ``staging=True`` for its staging CA); ``ca_bundle`` trusts a
    private CA's HTTPS. ``solver`` (a Solver object) answers every challenge
    of this manager when given — a platform passes its TokenStoreSolver
    here — otherwise each lineage uses the :class:`SolverSpec` stored with
    it (``default_solver`` for new ones). ``concurrency`` is the worker pool
    size for batches. ``limits`` is the local rate limit (:data:`DEFAULT_LIMITS`;
    ``None`` for none). ``backoff`` spaces retries after failures.
    ``clock`` returns the current UTC time (tests inject one); ``rng`` picks
    ARI moments and backoff jitter. ``hook_timeout`` bounds each hook.

    Thread safety: the public methods may be called from several threads;
    each batch runs its own pool. Use as a context manager (or call
    :meth:`close`) to close the ACME connections.
    """

    def __init__(
        self,
        store: Store,
        *,
        server: str | None = None,
        staging: bool = False,
        ca_bundle: str | PathLike[str] | None = None,
        solver: Solver | None = None,
        default_solver: SolverSpec | None = None,
        concurrency: int = 8,
        limits: RateLimits | None = DEFAULT_LIMITS,
        backoff: BackoffPolicy = DEFAULT_BACKOFF,
        timeout: float = 120.0,
        request_timeout: float = 10.0,
        hook_timeout: float = HOOK_TIMEOUT,
        clock: Callable[[], datetime] = _utcnow,
        rng: RandomSource | None = None,
        directory: Directory | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1", code="invalid-concurrency")
        self.store = store
        self.directory_url = (
            directory.url if directory else resolve_directory_url(server, staging=staging)
        )
        self.ca_bundle = ca_bundle
        self.solver = solver
        self.default_solver = default_solver
        self.concurrency = concurrency
        self.limits = limits
        self.backoff = backoff
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.hook_timeout = hook_timeout
        self.clock = clock
        self.rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self._directory = directory
        self._lock = threading.RLock()
        self._account: tuple[AccountRecord, PrivateKey] | None = None
        self._local = threading.local()
        self._clients: list[AcmeClient] = []
        self._buckets: dict[str, TokenBucket | None] = {}

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close every ACME connection this manager opened."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        self._local = threading.local()

    def __enter__(self) -> CertificateManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the manager's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    # -- the CA ----------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        """The CA's directory, fetched once and shared by every worker."""
        with self._lock:
            if self._directory is None:
                self._directory = fetch_directory(
                    self.directory_url, ca_bundle=self.ca_bundle, timeout=self.request_timeout
                )
            return self._directory

    def _bucket(self, which: Literal["new_orders", "new_accounts"], key: str) -> TokenBucket | None:
        if self.limits is None:
            return None
        with self._lock:
            full = f"{which}:{key}"
            if full not in self._buckets:
                self._buckets[full] = self.limits.bucket(which)
            return self._buckets[full]

    def _new_client(self, key: PrivateKey, account_url: str | None) -> AcmeClient:
        client = AcmeClient(
            self.directory,
            key,
            account_url=account_url,
            ca_bundle=self.ca_bundle,
            timeout=self.request_timeout,
        )
        with self._lock:
            self._clients.append(client)
        return client

    def _client(self) -> AcmeClient:
        """This thread's client for the account (made on first use)."""
        record, key = self.account()
        client: AcmeClient | None = getattr(self._local, "client", None)
        if client is None or client.account_url != record.uri:
            client = self._new_client(key, record.uri)
            self._local.client = client
        return client

    # -- accounts --------------------------------------------------------------

    def find_account(self) -> tuple[AccountRecord, PrivateKey] | None:
        """The stored valid account for this CA and its key, or ``None``.

        A key that cannot be read raises ``StoreError`` ``store-corrupt``.
        """
        with self._lock:
            if self._account is not None:
                return self._account
            record = self.store.find_account(self.directory_url)
            if record is None:
                return None
            pem = self.store.load_account_key(self.directory_url, record.account_id)
            try:
                key = load_private_key(pem)
            except ConfigError as exc:
                raise StoreError(
                    f"the key of account {record.account_id} for {self.directory_url} "
                    f"is unreadable: {exc.message}",
                    code="store-corrupt",
                    account_id=record.account_id,
                ) from None
            self._account = (record, key)
            return self._account

    def account(self) -> tuple[AccountRecord, PrivateKey]:
        """The account in use; ``CertmanError`` ``no-account`` when there is none."""
        found = self.find_account()
        if found is None:
            raise CertmanError(
                f"no ACME account for {self.directory_url} in the store: register one "
                "(certman account register --agree-tos, or pass --agree-tos)",
                code="no-account",
            )
        return found

    def ensure_account(
        self,
        *,
        agree_tos: bool = False,
        email: Sequence[str] | str | None = None,
        eab: ExternalAccountBinding | None = None,
    ) -> AccountRecord:
        """The stored account, registering one first when there is none and ``agree_tos``."""
        found = self.find_account()
        if found is not None:
            return found[0]
        if not agree_tos:
            self.account()  # raises no-account with the advice
        return self.register_account(agree_tos=agree_tos, email=email, eab=eab)

    def register_account(
        self,
        *,
        agree_tos: bool,
        email: Sequence[str] | str | None = None,
        eab: ExternalAccountBinding | None = None,
        key_type: KeyType | str = DEFAULT_KEY_TYPE,
    ) -> AccountRecord:
        """Create an account at the CA and store it (key 0600).

        ``agree_tos`` must be True when the CA has terms of service. When
        the store already has a valid account for this CA it is returned
        unchanged (no new account is made).
        """
        with self._lock:
            existing = self.find_account()
            if existing is not None:
                return existing[0]
            bucket = self._bucket("new_accounts", self.directory_url)
            if bucket is not None and not bucket.acquire(
                self.limits.max_wait if self.limits else 0
            ):
                raise AcmeError(
                    "local rate limit for new accounts reached; try again later",
                    code="rate-limited-locally",
                )
            key = generate_private_key(key_type)
            client = self._new_client(key, None)
            try:
                account = client.register(agree_tos=agree_tos, email=email, eab=eab)
            finally:
                client.close()
            now = self._now()
            extra: dict[str, Any] = {"key_type": str(KeyType.parse(key_type).value)}
            if eab is not None:
                extra["eab_key_id"] = eab.key_id
            record = AccountRecord(
                account_id=account_id_for_url(account.url),
                directory_url=self.directory_url,
                uri=account.url,
                contact=account.contact,
                status=account.status,
                terms_of_service_agreed=bool(agree_tos),
                created_at=now,
                updated_at=now,
                extra=extra,
            )
            self.store.save_account(record, private_key_to_pem(key))
            self._account = (record, key)
            log.info("registered account %s at %s", record.account_id, self.directory_url)
            return record

    def account_status(self, *, remote: bool = True) -> AccountStatus:
        """The stored account and, when ``remote``, the CA's view of it."""
        from certman.client.network import jwk_thumbprint
        from certman.keys import key_type_of

        record, key = self.account()
        info = self._client().account() if remote else None
        return AccountStatus(
            record=record,
            key_type=key_type_of(key).value,
            key_thumbprint=jwk_thumbprint(key),
            remote=info,
        )

    def update_account(self, email: Sequence[str] | str | None) -> AccountRecord:
        """Replace the account's e-mail contacts at the CA and in the store."""
        record, key = self.account()
        with self.store.lock_account(self.directory_url, record.account_id, timeout=30):
            account = self._client().update_contact(email)
            updated = replace(record, contact=account.contact, updated_at=self._now())
            self.store.update_account(updated)
            with self._lock:
                self._account = (updated, key)
        return updated

    def rollover_account(self, key_type: KeyType | str | None = None) -> AccountStatus:
        """Switch the account to a new key (RFC 8555 §7.3.5); the old key is refused after.

        The new key is stored *before* asking the CA (the old one is kept as
        the previous key), and put back if the CA refuses, so a crash at any
        point leaves both keys on disk.
        """
        from certman.keys import key_type_of

        record, old_key = self.account()
        new_type = key_type if key_type is not None else key_type_of(old_key)
        new_key = generate_private_key(new_type)
        with self.store.lock_account(self.directory_url, record.account_id, timeout=30):
            client = self._client()
            self.store.save_account_key(
                self.directory_url, record.account_id, private_key_to_pem(new_key)
            )
            try:
                client.rollover(new_key)
            except BaseException:
                self.store.save_account_key(
                    self.directory_url, record.account_id, private_key_to_pem(old_key)
                )
                raise
            extra = dict(record.extra)
            extra["key_type"] = key_type_of(new_key).value
            updated = replace(record, updated_at=self._now(), extra=extra)
            self.store.update_account(updated)
            with self._lock:
                self._account = (updated, new_key)
        # Other threads' clients hold the old key: drop them all.
        self.close()
        return self.account_status(remote=True)

    def deactivate_account(self) -> AccountRecord:
        """Deactivate the account at the CA for good, and mark it so in the store."""
        record, _ = self.account()
        with self.store.lock_account(self.directory_url, record.account_id, timeout=30):
            account = self._client().deactivate()
            updated = replace(record, status=account.status, updated_at=self._now())
            self.store.update_account(updated)
        with self._lock:
            self._account = None
        self.close()
        return updated

    # -- issuing ---------------------------------------------------------------

    def _solver_for(self, spec: SolverSpec | Solver | None, pool: _SolverPool) -> Solver:
        if spec is None:
            if self.solver is not None:
                return self.solver
            if self.default_solver is None:
                raise ConfigError(
                    "no way to answer challenges: choose --standalone, --webroot or "
                    "--dns-hook (library: solver= or default_solver=)",
                    code="no-solver",
                )
            spec = self.default_solver
        if isinstance(spec, SolverSpec):
            return pool.get(spec)
        return spec

    def _order(
        self,
        names: Sequence[str],
        solver: Solver,
        *,
        key_type: str,
        profile: str | None,
        preferred_chain: str | None,
        replaces: str | None,
    ) -> IssuedCertificate:
        """One order through this thread's client, inside the local rate limit."""
        record, _ = self.account()
        bucket = self._bucket("new_orders", f"{self.directory_url}#{record.account_id}")
        if bucket is not None:
            max_wait = self.limits.max_wait if self.limits else 0.0
            if not bucket.acquire(max_wait):
                raise _Deferred(
                    f"local rate limit: no room for a new order within {max_wait:.0f} s "
                    f"(next in {bucket.wait_time():.0f} s)"
                )
        client = self._client()
        try:
            return client.issue(
                names,
                solver,
                key_type=key_type,
                profile=profile,
                preferred_chain=preferred_chain,
                replaces=replaces,
                timeout=self.timeout,
            )
        except AcmeError as exc:
            if replaces is not None and exc.code == "acme-already-replaced":
                # RFC 9773 §5: the certificate was already replaced (by another
                # client or an earlier, lost attempt): order without ``replaces``.
                log.info("%s: already replaced at the CA; ordering without replaces", names[0])
                return client.issue(
                    names,
                    solver,
                    key_type=key_type,
                    profile=profile,
                    preferred_chain=preferred_chain,
                    timeout=self.timeout,
                )
            raise

    def issue(
        self,
        names: Sequence[str],
        *,
        name: str | None = None,
        key_type: KeyType | str = DEFAULT_KEY_TYPE,
        profile: str | None = None,
        preferred_chain: str | None = None,
        solver: SolverSpec | Solver | None = None,
        pre_hook: str | Sequence[str] | None = None,
        deploy_hook: str | Sequence[str] | None = None,
        post_hook: str | Sequence[str] | None = None,
        dry_run: bool = False,
    ) -> Outcome:
        """Issue one certificate for ``names`` and make it the lineage's live one.

        The lineage ``name`` defaults to :func:`lineage_name`. An existing
        lineage gets a new version (its stored settings are replaced by the
        ones given). Hooks run as in a renewal (pre, deploy, post; all their
        results are in ``Outcome.hooks``) and are stored for renewals.
        Raises the ``CertmanError`` on failure; nothing is written to the
        store then (an existing lineage records the error in its meta).
        """
        request = IssueRequest(
            names=tuple(names),
            name=name,
            key_type=KeyType.parse(key_type).value,
            profile=profile,
            preferred_chain=preferred_chain,
            solver=solver,
            pre_hooks=_hooks_tuple(pre_hook),
            deploy_hooks=_hooks_tuple(deploy_hook),
            post_hooks=_hooks_tuple(post_hook),
        )
        report = self._issue_batch([request], None, dry_run, None, raise_first=True)
        # One lineage: its outcome carries every hook of the call (pre and post too).
        return replace(report.outcomes[0], hooks=report.hooks)

    def issue_many(
        self,
        requests_: Iterable[IssueRequest],
        *,
        concurrency: int | None = None,
        dry_run: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RunReport:
        """Issue many lineages at once through a pool of ``concurrency`` workers.

        Each worker has its own ACME client. A failure is reported in its
        :class:`Outcome` (status ``failed``) and does not stop the others.
        Each request's own hooks run (each distinct pre command once, deploy
        per lineage, each distinct post command once at the end).
        """
        return self._issue_batch(list(requests_), concurrency, dry_run, progress, raise_first=False)

    def _issue_batch(
        self,
        items: list[IssueRequest],
        concurrency: int | None,
        dry_run: bool,
        progress: ProgressCallback | None,
        *,
        raise_first: bool,
    ) -> RunReport:
        for item in items:
            if not item.names:
                raise ConfigError("an issue request without names", code="no-names")
            validate_name(item.name or lineage_name(item.names))
            KeyType.parse(item.key_type)
        self.account()  # fail fast (no account / corrupt account) before any worker
        started = time.monotonic()
        hooks = HookSession(timeout=self.hook_timeout)
        pool = _SolverPool(self.store)
        errors: list[BaseException] = []

        def work(item: IssueRequest) -> Outcome:
            try:
                return self._issue_one(item, hooks, pool, dry_run=dry_run)
            except Exception as exc:  # isolate: one lineage never stops the others
                if not isinstance(exc, CertmanError):
                    log.exception("issuing %s failed unexpectedly", item.names[0])
                    exc = CertmanError(
                        f"unexpected error issuing {item.names[0]}: {_one_line(exc)}",
                        code="internal-error",
                    )
                if raise_first:
                    errors.append(exc)
                lname = item.name or lineage_name(item.names)
                return Outcome(
                    lname,
                    "failed",
                    names=item.names,
                    reason=_one_line(exc),
                    error_code=exc.code,
                )

        try:
            outcomes = self._run_pool(items, work, concurrency, progress)
        finally:
            pool.close()
            if not dry_run:
                hooks.finish()
        if raise_first and errors:
            raise errors[0]
        return RunReport(tuple(outcomes), tuple(hooks.results), time.monotonic() - started, dry_run)

    def _run_pool(
        self,
        items: Sequence[Any],
        work: Callable[[Any], Outcome],
        concurrency: int | None,
        progress: ProgressCallback | None,
    ) -> list[Outcome]:
        total = len(items)
        done = 0
        done_lock = threading.Lock()

        def run(item: Any) -> Outcome:
            nonlocal done
            outcome = work(item)
            if progress is not None:
                with done_lock:
                    done += 1
                    count = done
                try:
                    progress(outcome, count, total)
                except Exception:
                    log.warning("progress callback failed", exc_info=True)
            return outcome

        workers = max(1, min(concurrency or self.concurrency, total))
        if workers == 1:
            return [run(item) for item in items]
        with ThreadPoolExecutor(workers, thread_name_prefix="certman") as executor:
            return list(executor.map(run, items))

    def _issue_one(
        self, item: IssueRequest, hooks: HookSession, pool: _SolverPool, *, dry_run: bool
    ) -> Outcome:
        began = time.monotonic()
        lname = item.name or lineage_name(item.names)
        solver = self._solver_for(item.solver, pool)
        if isinstance(item.solver, SolverSpec):
            spec: SolverSpec | None = item.solver
        elif item.solver is None and self.solver is None:
            spec = self.default_solver
        else:
            spec = None
        with self.store.try_lock_certificate(lname) as held:
            if not held:
                raise StoreError(
                    f"{lname} is being issued or renewed by another process; try again",
                    code="store-locked",
                    name=lname,
                )
            if not dry_run:
                hooks.before_renewal(item.pre_hooks)
            existing = self.store.find_meta(lname)
            try:
                issued = self._order(
                    item.names,
                    solver,
                    key_type=item.key_type,
                    profile=item.profile,
                    preferred_chain=item.preferred_chain,
                    replaces=None,
                )
            except _Deferred as exc:
                raise AcmeError(str(exc), code="rate-limited-locally") from None
            except CertmanError as exc:
                if existing is not None and not dry_run:
                    self._record_failure(existing, exc, None)
                raise
            now = self._now()
            record, _ = self.account()
            meta = CertificateMeta(
                name=lname,
                names=issued.names,
                key_type=issued.key_type,
                profile=item.profile,
                preferred_chain=item.preferred_chain,
                directory_url=self.directory_url,
                account_id=record.account_id,
                created_at=existing.created_at if existing and existing.created_at else now,
                updated_at=now,
                solver=spec.kind if spec else "custom",
                solver_options=dict(spec.options) if spec else {},
                pre_hooks=item.pre_hooks,
                deploy_hooks=item.deploy_hooks,
                post_hooks=item.post_hooks,
                extra=_cert_extra({}, issued),
            )
            meta = self._success_meta(meta, issued, now)
            return self._install(
                lname, issued, meta, hooks, "issued", began, dry_run=dry_run, replaced=None
            )

    def _success_meta(
        self, meta: CertificateMeta, issued: IssuedCertificate, now: datetime
    ) -> CertificateMeta:
        state = record_success(None, now=now)
        meta = replace(meta, **meta_updates(state, meta))
        return replace(
            meta,
            last_error=None,
            last_error_code=None,
            last_error_at=None,
            not_after=issued.not_after,
            serial=format(issued.serial, "x"),
            updated_at=now,
            extra=_cert_extra(meta.extra, issued),
        )

    def _install(
        self,
        lname: str,
        issued: IssuedCertificate,
        meta: CertificateMeta,
        hooks: HookSession,
        status: OutcomeStatus,
        began: float,
        *,
        dry_run: bool,
        replaced: str | None,
    ) -> Outcome:
        """Store a fresh certificate (unless ``dry_run``) and run its deploy hooks."""
        if issued.private_key_pem is None:
            raise RenewalError("the client did not return the new key", code="internal-error")
        version: int | None = None
        location: str | None = None
        deploy: tuple[HookResult, ...] = ()
        if dry_run:
            status = "dry-run"
        else:
            files = CertificateFiles(
                cert_pem=issued.cert_pem.encode(),
                chain_pem=issued.chain_pem.encode(),
                fullchain_pem=issued.fullchain_pem.encode(),
                privkey_pem=issued.private_key_pem,
            )
            saved = self.store.save_certificate(lname, files, meta)
            version = saved.version
            location = self.store.certificate_location(lname)
            deploy = tuple(
                hooks.renewed(
                    lname,
                    location,
                    issued.names,
                    deploy=meta.deploy_hooks,
                    post=meta.post_hooks,
                )
            )
        return Outcome(
            lname,
            status,
            names=issued.names,
            reason=f"certificate valid until {_iso(issued.not_after)}",
            version=version,
            serial=format(issued.serial, "x"),
            not_after=issued.not_after,
            location=location,
            replaced=replaced,
            duration=time.monotonic() - began,
            hooks=deploy,
        )

    # -- renewing --------------------------------------------------------------

    def renew_all(self, **kwargs: Any) -> RunReport:
        """:meth:`renew_due` with ``force=True``: renew every lineage (or those named)."""
        kwargs["force"] = True
        return self.renew_due(**kwargs)

    def renew_due(
        self,
        names: Iterable[str] | None = None,
        *,
        force: bool = False,
        dry_run: bool = False,
        concurrency: int | None = None,
        pre_hook: str | Sequence[str] | None = None,
        deploy_hook: str | Sequence[str] | None = None,
        post_hook: str | Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        next_run: datetime | None = None,
        lock_wait: float | None = None,
    ) -> RunReport:
        """Renew every lineage that is due (or only ``names``; all of them with ``force``).

        For each lineage, under its lock: fetch the CA's renewalInfo when the
        CA has ARI and the stored ``Retry-After`` allows (the chosen moment
        and next check are stored even when nothing is due), decide with
        :func:`certman.renewal.decide`, order with ``replaces`` when the CA
        has ARI, store the new version and run the deploy hooks. The pre
        hooks (the run's, then each lineage's stored ones) run once before the
        first renewal; the post hooks once at the end if anything was renewed.

        ``dry_run`` orders real certificates from the CA but stores nothing
        and runs no hooks. A lineage another process holds is reported
        ``locked``; in a forced run, one that another process renewed after
        this run began is reported ``skipped`` (never renewed twice).
        ``next_run``: when the caller runs next (ARI moments before it are due
        now). ``lock_wait`` (cluster mode: several workers share a store):
        each worker starts at a random point of the list; after the first pass, lineages that were
        ``locked`` are tried once more, waiting up to this many seconds for
        each lock, so that when several workers split a run and one of them
        dies mid-order (its lock is freed), a survivor finishes that lineage
        in the same run (it is re-read under the lock, so one that the other
        holder did renew is ``skipped``/``not-due``, never renewed twice).
        Never raises for one lineage's failure; see :class:`RunReport`.
        """
        run_started = self._now()
        started = time.monotonic()
        wanted = None if names is None else list(dict.fromkeys(names))
        available = self.store.list_certificates()
        if wanted is None:
            targets = available
        else:
            for n in wanted:
                validate_name(n)
            targets = wanted
        hooks = HookSession(
            pre=_hooks_tuple(pre_hook),
            deploy=_hooks_tuple(deploy_hook),
            post=_hooks_tuple(post_hook),
            timeout=self.hook_timeout,
        )
        pool = _SolverPool(self.store)

        def work(lname: str, wait: float | None = None) -> Outcome:
            began = time.monotonic()
            try:
                return self._renew_one(
                    lname,
                    hooks,
                    pool,
                    force=force,
                    dry_run=dry_run,
                    run_started=run_started,
                    next_run=next_run,
                    wait=wait,
                )
            except Exception as exc:  # isolate: one lineage never stops the others
                if not isinstance(exc, CertmanError):
                    log.exception("renewal of %s failed unexpectedly", lname)
                return Outcome(
                    lname,
                    "failed",
                    reason=_one_line(exc),
                    error_code=_error_code(exc),
                    duration=time.monotonic() - began,
                )

        try:
            # Cluster mode: each worker starts at a random point of the list,
            # so that workers split it instead of all contending for the
            # first names; the report keeps the list's order.
            shift = int(self.rng.random() * len(targets)) if lock_wait and targets else 0
            order = targets[shift:] + targets[:shift]
            done = self._run_pool(order, work, concurrency, progress)
            outcomes = done[len(targets) - shift :] + done[: len(targets) - shift]
            if lock_wait:
                again = [i for i, o in enumerate(outcomes) if o.status == "locked"]
                if again:
                    retried = self._run_pool(
                        [outcomes[i].name for i in again],
                        lambda lname: work(lname, lock_wait),
                        concurrency,
                        None,
                    )
                    for i, outcome in zip(again, retried, strict=True):
                        outcomes[i] = outcome
        finally:
            pool.close()
            if not dry_run:
                hooks.finish()
        return RunReport(tuple(outcomes), tuple(hooks.results), time.monotonic() - started, dry_run)

    def _load_live(self, lname: str) -> _Live:
        version = self.store.load_live(lname)
        try:
            cert = x509.load_pem_x509_certificate(version.files.cert_pem)
        except ValueError as exc:
            raise StoreError(
                f"{lname}: the live certificate is not a readable PEM certificate",
                code="store-corrupt",
                name=lname,
            ) from exc
        return _Live(cert, version.version, version.files.cert_pem)

    def _fetch_ari(
        self, lname: str, live: _Live, state: RenewalState, now: datetime
    ) -> tuple[RenewalInfo | None, RenewalState]:
        base = self.directory.renewal_info
        if base is None or not ari_check_due(state, live.cert, now=now):
            return None, state
        session: requests.Session | None = getattr(self._local, "ari_session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.ari_session = session
        try:
            info = fetch_renewal_info(
                live.cert,
                base,
                now=now,
                session=session,
                ca_bundle=self.ca_bundle,
                timeout=self.request_timeout,
            )
        except AcmeError as exc:
            log.warning("%s: renewal information unavailable: %s", lname, exc)
            return None, record_ari_error(state, now=now, retry_after=_retry_after_of(exc, now))
        return info, state

    def _renew_one(
        self,
        lname: str,
        hooks: HookSession,
        pool: _SolverPool,
        *,
        force: bool,
        dry_run: bool,
        run_started: datetime,
        next_run: datetime | None,
        wait: float | None = None,
    ) -> Outcome:
        began = time.monotonic()
        with self._lineage_lock(lname, wait) as held:
            if not held:
                return Outcome(
                    lname,
                    "locked",
                    reason="another process is renewing it now",
                    duration=time.monotonic() - began,
                )
            # Re-read under the lock: another process may have just renewed it.
            meta = self.store.find_meta(lname)
            live = self._load_live(lname)
            if meta is None:
                meta = _meta_from_cert(lname, live.cert)
            names = meta.names
            # Renewed by another process since this run began: never twice in
            # one run (and cheaper than asking ARI about the new certificate).
            if meta.last_success_at is not None and meta.last_success_at > run_started:
                return Outcome(
                    lname,
                    "skipped",
                    names=names,
                    reason="renewed by another process during this run",
                    not_after=meta.not_after,
                    duration=time.monotonic() - began,
                )
            now = self._now()
            state = state_from_meta(meta)
            info, state = self._fetch_ari(lname, live, state, now)
            decision = decide(
                live.cert,
                info,
                now=now,
                state=state,
                rng=self.rng,
                force=force,
                next_run=next_run,
            )
            if not decision.due:
                if not dry_run and decision.state != state_from_meta(meta):
                    # Persist the chosen ARI moment and Retry-After (RFC 9773 §4.2).
                    self.store.save_meta(replace(meta, **meta_updates(decision.state, meta)))
                return Outcome(
                    lname,
                    "not-due",
                    names=names,
                    reason=decision.reason,
                    not_after=live.cert.not_valid_after_utc,
                    next_renewal=decision.at,
                    renewal_source=decision.source,
                    duration=time.monotonic() - began,
                )
            return self._renew_due_one(
                lname, meta, live, decision, hooks, pool, dry_run=dry_run, began=began
            )

    @contextlib.contextmanager
    def _lineage_lock(self, lname: str, wait: float | None) -> Iterator[bool]:
        """The lineage's lock: try once, or wait up to ``wait`` seconds; yields whether held."""
        if not wait:
            with self.store.try_lock_certificate(lname) as held:
                yield held
            return
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.store.lock_certificate(lname, timeout=wait))
            except StoreError as exc:
                if exc.code != "store-locked":
                    raise
                held = False
            else:
                held = True
            yield held

    def _renew_due_one(
        self,
        lname: str,
        meta: CertificateMeta,
        live: _Live,
        decision: RenewalDecision,
        hooks: HookSession,
        pool: _SolverPool,
        *,
        dry_run: bool,
        began: float,
    ) -> Outcome:
        replaces: str | None = None
        try:
            if self.directory.renewal_info is not None:
                with contextlib.suppress(AcmeError):
                    replaces = cert_id(live.cert)
            if self.solver is not None:
                solver = self.solver
            elif meta.solver in (None, "custom"):
                raise ConfigError(
                    f"{lname} was issued with a custom solver: pass solver= to renew it",
                    code="no-solver",
                )
            else:
                solver = pool.get(SolverSpec(meta.solver, dict(meta.solver_options)))
            if not dry_run:
                hooks.before_renewal(meta.pre_hooks)
            issued = self._order(
                meta.names,
                solver,
                key_type=meta.key_type,
                profile=meta.profile,
                preferred_chain=meta.preferred_chain,
                replaces=replaces,
            )
        except _Deferred as exc:
            return Outcome(
                lname,
                "deferred",
                names=meta.names,
                reason=str(exc),
                not_after=live.cert.not_valid_after_utc,
                duration=time.monotonic() - began,
            )
        except CertmanError as exc:
            failed = meta if dry_run else self._record_failure(meta, exc, live.cert, decision.state)
            return Outcome(
                lname,
                "failed",
                names=meta.names,
                reason=_one_line(exc),
                error_code=exc.code,
                not_after=live.cert.not_valid_after_utc,
                next_renewal=failed.next_retry_at,
                renewal_source="backoff",
                duration=time.monotonic() - began,
            )
        now = self._now()
        new_meta = replace(meta, names=issued.names, directory_url=self.directory_url)
        record, _ = self.account()
        new_meta = replace(new_meta, account_id=record.account_id)
        new_meta = self._success_meta(new_meta, issued, now)
        try:
            return self._install(
                lname,
                issued,
                new_meta,
                hooks,
                "renewed",
                began,
                dry_run=dry_run,
                replaced=issued.replaces,
            )
        except CertmanError as exc:
            # The store refused the new version; the old one is still live.
            self._record_failure(meta, exc, live.cert, decision.state)
            raise

    def _record_failure(
        self,
        meta: CertificateMeta,
        exc: CertmanError,
        cert: x509.Certificate | None,
        state: RenewalState | None = None,
    ) -> CertificateMeta:
        now = self._now()
        base = state if state is not None else state_from_meta(meta)
        failed = record_failure(
            base,
            now=now,
            retry_after=_retry_after_of(exc, now),
            not_after=cert.not_valid_after_utc if cert is not None else meta.not_after,
            policy=self.backoff,
            rng=self.rng,
        )
        updated = replace(meta, **meta_updates(failed, meta))
        updated = replace(
            updated, last_error=_one_line(exc), last_error_code=exc.code, updated_at=now
        )
        try:
            self.store.save_meta(updated)
        except CertmanError as store_exc:
            # One line: the store's error says what is wrong (e.g. the database is down).
            log.warning(
                "%s: could not record the failure: %s [%s]", meta.name, store_exc, store_exc.code
            )
        return updated

    # -- revocation ------------------------------------------------------------

    def revoke(
        self,
        name: str,
        *,
        reason: RevocationReason | int | str = RevocationReason.UNSPECIFIED,
        use_certificate_key: bool = False,
    ) -> Outcome:
        """Revoke lineage ``name``'s live certificate (signed by the account, or by
        the certificate's own key with ``use_certificate_key``) and note it in its meta.

        The files stay where they are: a server keeps serving them until the
        user issues a new certificate or removes the lineage.
        """
        began = time.monotonic()
        rsn = RevocationReason.parse(reason)
        version = self.store.load_live(name)
        cert = x509.load_pem_x509_certificate(version.files.cert_pem)
        if use_certificate_key:
            cert_key = load_private_key(version.files.privkey_pem)
            record_key = self.find_account()
            if record_key is not None:
                self._client().revoke(version.files.cert_pem, reason=rsn, cert_key=cert_key)
            else:
                client = self._new_client(cert_key, None)
                client.revoke(version.files.cert_pem, reason=rsn, cert_key=cert_key)
        else:
            self._client().revoke(version.files.cert_pem, reason=rsn)
        now = self._now()
        meta = self.store.find_meta(name)
        if meta is not None:
            extra = dict(meta.extra)
            extra["revoked"] = {
                "at": _iso(now),
                "serial": format(cert.serial_number, "x"),
                "reason": rsn.label,
            }
            self.store.save_meta(replace(meta, extra=extra, updated_at=now))
        return Outcome(
            name,
            "revoked",
            names=meta.names if meta else (),
            reason=f"revoked ({rsn.label})",
            serial=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc,
            version=version.version,
            location=self.store.certificate_location(name),
            duration=time.monotonic() - began,
        )

    # -- status ----------------------------------------------------------------

    def status(self) -> list[CertificateStatus]:
        """Every lineage's status, from the store only (no network)."""
        return list_status(self.store, now=self._now())


class _Deferred(Exception):
    """The local rate limit has no room: leave the lineage for the next run."""


def _cert_extra(extra: Mapping[str, Any], issued: IssuedCertificate) -> dict[str, Any]:
    out = dict(extra)
    out["not_before"] = _iso(issued.not_before)
    out["issuer"] = issued.issuer
    out.pop("revoked", None)
    return out


def _meta_from_cert(name: str, cert: x509.Certificate) -> CertificateMeta:
    """A minimal meta for a lineage that has none (e.g. imported by hand)."""
    names: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    if not names:
        names = [_common_name(cert.subject)]
    return CertificateMeta(name=name, names=tuple(names), not_after=cert.not_valid_after_utc)


def certificate_status(
    store: Store, name: str, *, now: datetime, rng: RandomSource | None = None
) -> CertificateStatus:
    """One lineage's status from the store (no network; ARI as last stored)."""
    location = store.certificate_location(name)
    try:
        meta = store.find_meta(name)
        version = store.load_live(name)
        cert = x509.load_pem_x509_certificate(version.files.cert_pem)
    except (CertmanError, ValueError) as exc:
        return CertificateStatus(
            name=name,
            names=(),
            issuer=None,
            not_before=None,
            not_after=None,
            days_left=None,
            key_type=None,
            profile=None,
            serial=None,
            version=None,
            location=location,
            last_error=None,
            last_error_code=None,
            consecutive_failures=0,
            last_success_at=None,
            next_renewal=None,
            renewal_source=None,
            renewal_due=False,
            renewal_reason="",
            error=_one_line(exc),
        )
    if meta is None:
        meta = _meta_from_cert(name, cert)
    # A fixed generator: listing must not invent a different moment each run
    # (the moment renew persists is the one that counts).
    decision = decide(
        cert,
        now=now,
        state=state_from_meta(meta),
        rng=rng or random.Random(0),
    )
    from certman.keys import key_type_of

    public = cert.public_key()
    key_type = meta.key_type
    if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        with contextlib.suppress(ConfigError):
            key_type = key_type_of(public).value
    return CertificateStatus(
        name=name,
        names=meta.names,
        issuer=_common_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        days_left=(cert.not_valid_after_utc - now).total_seconds() / 86400,
        key_type=key_type,
        profile=meta.profile,
        serial=format(cert.serial_number, "x"),
        version=version.version,
        location=location,
        last_error=meta.last_error,
        last_error_code=meta.last_error_code,
        consecutive_failures=meta.consecutive_failures,
        last_success_at=meta.last_success_at,
        next_renewal=decision.at,
        renewal_source=decision.source,
        renewal_due=decision.due,
        renewal_reason=decision.reason,
    )


def list_status(store: Store, *, now: datetime) -> list[CertificateStatus]:
    """Every lineage's status, sorted by name (no network)."""
    return [certificate_status(store, n, now=now) for n in store.list_certificates()]
