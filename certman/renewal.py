"""When to renew a certificate: pure policy, no clock, no network, no disk.

Every function here takes ``now`` (a timezone-aware datetime) and, where
chance is involved, a random source, so the whole policy can be tested with
injected clocks and seeded generators, and so two callers given the same
inputs always agree.

The rules:

1. **ARI first** (RFC 9773 §4.2). When the CA published a suggested renewal
   window for the certificate, certman picks one uniformly random moment
   inside it, *remembers that moment* (it is part of :class:`RenewalState`,
   which the caller stores in the certificate's meta) and renews once that
   moment has come. The moment is chosen again only when the CA moves the
   window. A window that has already ended means "renew now"; so does a
   moment that falls before the caller's next scheduled run (``next_run``),
   as RFC 9773 §4.2 step 4 says, so a twice-a-day timer does not miss it.
2. **Lifetime otherwise**: due when one third of the certificate's lifetime
   is left, or one half for lifetimes under ten days (Let's Encrypt's 6-day
   certificates), so a short certificate gets several attempts before it
   expires.
3. **Expired** certificates are always due.
4. **Failures back off.** Each failed attempt is recorded
   (:func:`record_failure`) with the next time a retry is allowed:
   exponential backoff with jitter, never earlier than a ``Retry-After`` the
   CA gave, and with a shorter cap when the certificate is close to expiry.
   A due certificate whose retry time has not come is reported as not due
   with source ``"backoff"`` or ``"retry-after"``.

The value types describing the CA's advice (:class:`SuggestedWindow`,
:class:`RenewalInfo`) live here rather than in :mod:`certman.client.ari`
(which produces them) so this module stays a leaf that imports neither
``acme`` nor ``requests``: ``certman list`` can show renewal times without
loading the ACME stack.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from cryptography import x509

logger = logging.getLogger(__name__)

Source = Literal["ari", "lifetime", "expired", "forced", "backoff", "retry-after"]
"""Where a :class:`RenewalDecision` came from.

- ``"ari"``: the CA's suggested window (RFC 9773);
- ``"lifetime"``: the fallback rule (1/3 of the lifetime left, 1/2 under 10 days);
- ``"expired"``: the certificate is already past its notAfter;
- ``"forced"``: the caller asked for a renewal regardless;
- ``"backoff"``: due, but waiting out the backoff after failed attempts;
- ``"retry-after"``: due, but the CA asked (``Retry-After``) to wait.
"""

SHORT_LIFETIME = timedelta(days=10)
"""Certificates living less than this renew at half their lifetime, not a third."""

DEFAULT_ARI_RECHECK = timedelta(hours=6)
"""How long to wait before asking the CA again after an ARI fetch error."""


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in ``[0, 1)``: ``random.Random``,
    ``random.SystemRandom``, or a stub in tests."""

    def random(self) -> float: ...


class HasValidity(Protocol):
    """Anything that knows a certificate's validity period (e.g. a meta record)."""

    @property
    def not_before(self) -> datetime: ...

    @property
    def not_after(self) -> datetime: ...


def _utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive datetime is a programming error, not a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(value: Any, what: str) -> datetime:
    """An RFC 3339 time string (stored state, ARI answers) in UTC; ``ValueError`` otherwise.

    A time without an offset is refused: guessing its zone would move a
    renewal window by hours.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected an RFC 3339 string, got {value!r}")
    try:
        # Python 3.11 reads "Z" and longer fractions (Go servers send nanoseconds).
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{what}: not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{what}: RFC 3339 time without an offset: {value!r}")
    return parsed.astimezone(UTC)


def _parse_time(value: Any, what: str) -> datetime | None:
    return None if value is None else parse_rfc3339(value, what)


@dataclass(frozen=True)
class Validity:
    """A certificate's validity period, both ends timezone-aware UTC."""

    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_before", _utc(self.not_before, "not_before"))
        object.__setattr__(self, "not_after", _utc(self.not_after, "not_after"))

    @classmethod
    def of(cls, cert: x509.Certificate | HasValidity) -> Validity:
        """The validity of a certificate, or of anything with ``not_before``/``not_after``."""
        if isinstance(cert, Validity):
            return cert
        if isinstance(cert, x509.Certificate):
            return cls(cert.not_valid_before_utc, cert.not_valid_after_utc)
        return cls(cert.not_before, cert.not_after)

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class SuggestedWindow:
    """The CA's suggested renewal window (RFC 9773 §4.2), ``start < end``.

    Raises ``ValueError`` when ``end`` does not come after ``start``: the RFC
    says a client must treat such a response as if it had received none.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "window start"))
        object.__setattr__(self, "end", _utc(self.end, "window end"))
        if self.end <= self.start:
            raise ValueError(f"suggested window ends ({self.end}) at or before it starts")

    def choose(self, rng: RandomSource) -> datetime:
        """A uniformly random moment in ``[start, end)``."""
        span = (self.end - self.start).total_seconds()
        fraction = rng.random()
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"random source returned {fraction!r}, outside [0, 1)")
        # Whole microseconds so the chosen moment survives a JSON round trip unchanged.
        offset = timedelta(microseconds=int(span * fraction * 1_000_000))
        return self.start + offset


@dataclass(frozen=True)
class RenewalInfo:
    """What the CA's renewalInfo resource said about one certificate.

    ``next_check`` is when to ask again: the response's ``Retry-After``,
    clamped to sane bounds by the fetcher. ``cert_id`` is the RFC 9773 §4.1
    certificate identifier it was fetched for (also what a renewal order puts
    in ``replaces``).
    """

    window: SuggestedWindow
    next_check: datetime
    fetched_at: datetime
    cert_id: str = ""
    explanation_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "next_check", _utc(self.next_check, "next_check"))
        object.__setattr__(self, "fetched_at", _utc(self.fetched_at, "fetched_at"))


@dataclass(frozen=True)
class RenewalState:
    """What certman remembers about one certificate's renewal between runs.

    The caller persists it (``to_dict`` / ``from_dict``, JSON-ready) in the
    certificate's meta and hands it back to :func:`decide`. It is reset by
    :func:`record_success` when a new certificate is installed.

    - ``ari_window`` / ``ari_chosen_at``: the last suggested window seen and
      the random moment chosen in it (RFC 9773 §4.2 asks clients to keep it);
    - ``ari_next_check``: when the CA may be asked again (``Retry-After``);
    - ``consecutive_failures``, ``last_failure_at``, ``next_retry_at``,
      ``retry_source``: the failure backoff;
    - ``last_success_at``: when a renewal (or the issuance) last succeeded.
    """

    ari_window: SuggestedWindow | None = None
    ari_chosen_at: datetime | None = None
    ari_explanation_url: str | None = None
    ari_next_check: datetime | None = None
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    next_retry_at: datetime | None = None
    retry_source: Literal["backoff", "retry-after"] | None = None
    last_success_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as RFC 3339 strings in UTC)."""
        window = self.ari_window
        return {
            "ari_window": None
            if window is None
            else {"start": _iso(window.start), "end": _iso(window.end)},
            "ari_chosen_at": _iso(self.ari_chosen_at),
            "ari_explanation_url": self.ari_explanation_url,
            "ari_next_check": _iso(self.ari_next_check),
            "consecutive_failures": self.consecutive_failures,
            "last_failure_at": _iso(self.last_failure_at),
            "next_retry_at": _iso(self.next_retry_at),
            "retry_source": self.retry_source,
            "last_success_at": _iso(self.last_success_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RenewalState:
        """The inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises ``ValueError`` on malformed values (the store turns that into
        its own "corrupt meta" error).
        """
        if not data:
            return cls()
        window_data = data.get("ari_window")
        window = None
        if window_data is not None:
            if not isinstance(window_data, Mapping):
                raise ValueError(f"ari_window: expected an object, got {window_data!r}")
            start = _parse_time(window_data.get("start"), "ari_window.start")
            end = _parse_time(window_data.get("end"), "ari_window.end")
            if start is None or end is None:
                raise ValueError("ari_window needs both start and end")
            window = SuggestedWindow(start, end)
        failures = data.get("consecutive_failures", 0)
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
            raise ValueError(f"consecutive_failures: expected an integer >= 0, got {failures!r}")
        retry_source = data.get("retry_source")
        if retry_source not in (None, "backoff", "retry-after"):
            raise ValueError(f"retry_source: unknown value {retry_source!r}")
        explanation = data.get("ari_explanation_url")
        if explanation is not None and not isinstance(explanation, str):
            raise ValueError(f"ari_explanation_url: expected a string, got {explanation!r}")
        return cls(
            ari_window=window,
            ari_chosen_at=_parse_time(data.get("ari_chosen_at"), "ari_chosen_at"),
            ari_explanation_url=explanation,
            ari_next_check=_parse_time(data.get("ari_next_check"), "ari_next_check"),
            consecutive_failures=failures,
            last_failure_at=_parse_time(data.get("last_failure_at"), "last_failure_at"),
            next_retry_at=_parse_time(data.get("next_retry_at"), "next_retry_at"),
            retry_source=retry_source,
            last_success_at=_parse_time(data.get("last_success_at"), "last_success_at"),
        )


class RenewalMeta(Protocol):
    """The renewal fields of a stored certificate meta (``certman.store.CertificateMeta``)."""

    @property
    def ari_window_start(self) -> datetime | None: ...
    @property
    def ari_window_end(self) -> datetime | None: ...
    @property
    def ari_chosen_time(self) -> datetime | None: ...
    @property
    def ari_retry_after(self) -> datetime | None: ...
    @property
    def ari_explanation_url(self) -> str | None: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def last_error_at(self) -> datetime | None: ...
    @property
    def next_retry_at(self) -> datetime | None: ...
    @property
    def last_success_at(self) -> datetime | None: ...
    @property
    def extra(self) -> Mapping[str, Any]: ...


_RETRY_SOURCE_KEY = "renewal_retry_source"


def state_from_meta(meta: RenewalMeta) -> RenewalState:
    """The :class:`RenewalState` kept in a certificate's meta.

    A stored window that is not a valid window (end not after start) is
    dropped, as RFC 9773 says to treat such a window as no answer.
    """
    window = None
    if meta.ari_window_start is not None and meta.ari_window_end is not None:
        try:
            window = SuggestedWindow(meta.ari_window_start, meta.ari_window_end)
        except ValueError:
            logger.warning("ignoring an invalid stored ARI window")
    retry_source: Literal["backoff", "retry-after"] | None = None
    if meta.next_retry_at is not None:
        stored = meta.extra.get(_RETRY_SOURCE_KEY)
        retry_source = "retry-after" if stored == "retry-after" else "backoff"
    return RenewalState(
        ari_window=window,
        ari_chosen_at=meta.ari_chosen_time if window is not None else None,
        ari_explanation_url=meta.ari_explanation_url,
        ari_next_check=meta.ari_retry_after,
        consecutive_failures=meta.consecutive_failures,
        last_failure_at=meta.last_error_at,
        next_retry_at=meta.next_retry_at,
        retry_source=retry_source,
        last_success_at=meta.last_success_at,
    )


def meta_updates(state: RenewalState, meta: RenewalMeta) -> dict[str, Any]:
    """The meta fields that store ``state``: ``dataclasses.replace(meta, **meta_updates(...))``.

    ``last_error_at`` is the last failure's time; ``last_error`` and
    ``last_error_code`` (the message and code) are left to the caller. The
    retry source rides in ``extra``.
    """
    window = state.ari_window
    extra = dict(meta.extra)
    if state.retry_source is None:
        extra.pop(_RETRY_SOURCE_KEY, None)
    else:
        extra[_RETRY_SOURCE_KEY] = state.retry_source
    return {
        "ari_window_start": window.start if window else None,
        "ari_window_end": window.end if window else None,
        "ari_chosen_time": state.ari_chosen_at,
        "ari_retry_after": state.ari_next_check,
        "ari_explanation_url": state.ari_explanation_url,
        "consecutive_failures": state.consecutive_failures,
        "last_error_at": state.last_failure_at,
        "next_retry_at": state.next_retry_at,
        "last_success_at": state.last_success_at,
        "extra": extra,
    }


@dataclass(frozen=True)
class RenewalDecision:
    """Whether to renew now, and when the renewal is (or was) due.

    ``at`` is the moment the renewal became or becomes due; for
    ``"backoff"``/``"retry-after"`` it is the earliest next attempt.
    ``reason`` is one human-readable line for ``certman list`` and logs.
    ``state`` is the :class:`RenewalState` to persist: it carries the ARI
    moment chosen for this window, so the caller must store it even when
    nothing is due.
    """

    due: bool
    at: datetime
    source: Source
    reason: str
    state: RenewalState = field(default_factory=RenewalState)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for ``--json`` output (the state is left out)."""
        return {
            "due": self.due,
            "at": _iso(self.at),
            "source": self.source,
            "reason": self.reason,
            "consecutive_failures": self.state.consecutive_failures,
        }


@dataclass(frozen=True)
class BackoffPolicy:
    """Retry schedule after failed renewals.

    The n-th consecutive failure waits ``initial * factor**(n-1)``, capped at
    ``maximum``, plus up to ``jitter`` (a fraction) more so that a fleet that
    failed together does not retry together. When the certificate's notAfter
    is known the cap shrinks to a quarter of the time left (never below
    ``near_expiry_floor``), so a certificate about to expire is retried more
    often. A CA's ``Retry-After`` is honoured up to ``max_retry_after``.

    The defaults (10 min doubling to 1 day) stay well inside Let's Encrypt's
    failed-validation limit and its advice to back off and retry at most
    about daily.
    """

    initial: timedelta = timedelta(minutes=10)
    factor: float = 2.0
    maximum: timedelta = timedelta(days=1)
    jitter: float = 0.1
    near_expiry_floor: timedelta = timedelta(hours=1)
    max_retry_after: timedelta = timedelta(days=7)

    def delay(
        self,
        failures: int,
        rng: RandomSource,
        *,
        now: datetime | None = None,
        not_after: datetime | None = None,
    ) -> timedelta:
        """The wait after the ``failures``-th consecutive failure (``failures >= 1``)."""
        if failures < 1:
            raise ValueError("failures must be >= 1")
        cap = self.maximum
        if not_after is not None and now is not None:
            remaining = _utc(not_after, "not_after") - _utc(now, "now")
            cap = min(cap, max(self.near_expiry_floor, remaining / 4))
        # Float exponent growth overflows timedelta long before it matters; cap the exponent.
        base_seconds = self.initial.total_seconds() * self.factor ** min(failures - 1, 64)
        seconds = min(base_seconds, cap.total_seconds())
        seconds *= 1.0 + self.jitter * rng.random()
        return timedelta(seconds=seconds)


DEFAULT_BACKOFF = BackoffPolicy()


def _default_rng(rng: RandomSource | None) -> RandomSource:
    return rng if rng is not None else random.Random()


def lifetime_renewal_time(cert: x509.Certificate | HasValidity) -> datetime:
    """When the lifetime rule makes a certificate due.

    One third of the lifetime left, or one half when the lifetime is under
    ten days (so a 6-day certificate renews with three days to spare, a
    45-day one with 15, a 90-day one with 30).
    """
    validity = Validity.of(cert)
    fraction = 2 if validity.lifetime < SHORT_LIFETIME else 3
    return validity.not_after - validity.lifetime / fraction


def ari_check_due(
    state: RenewalState | None, cert: x509.Certificate | HasValidity, *, now: datetime
) -> bool:
    """Whether the CA's renewalInfo should be fetched now.

    True when nothing is stored yet or the stored ``Retry-After`` moment has
    come; always False once the certificate has expired (RFC 9773 §4.3:
    clients stop checking expired certificates).
    """
    now = _utc(now, "now")
    if now >= Validity.of(cert).not_after:
        return False
    if state is None or state.ari_next_check is None:
        return True
    return now >= state.ari_next_check


def record_ari_error(
    state: RenewalState | None, *, now: datetime, retry_after: datetime | None = None
) -> RenewalState:
    """Remember that fetching renewalInfo failed, so it is not retried at once.

    The next check is the server's ``Retry-After`` when it gave one, else
    :data:`DEFAULT_ARI_RECHECK` from now. The stored window (if any) is kept
    and keeps being used by :func:`decide`.
    """
    now = _utc(now, "now")
    next_check = _utc(retry_after, "retry_after") if retry_after else now + DEFAULT_ARI_RECHECK
    return replace(state or RenewalState(), ari_next_check=next_check)


def record_failure(
    state: RenewalState | None,
    *,
    now: datetime,
    retry_after: datetime | None = None,
    not_after: datetime | None = None,
    policy: BackoffPolicy = DEFAULT_BACKOFF,
    rng: RandomSource | None = None,
) -> RenewalState:
    """The state after a failed renewal attempt: one more failure, and when to retry.

    ``retry_after`` is an absolute time the CA asked to wait for (e.g. from a
    ``rateLimited`` problem's ``Retry-After``); it wins over the backoff when
    it is later, up to ``policy.max_retry_after``.
    """
    now = _utc(now, "now")
    state = state or RenewalState()
    failures = state.consecutive_failures + 1
    next_retry = now + policy.delay(failures, _default_rng(rng), now=now, not_after=not_after)
    source: Literal["backoff", "retry-after"] = "backoff"
    if retry_after is not None:
        honoured = min(_utc(retry_after, "retry_after"), now + policy.max_retry_after)
        if honoured > next_retry:
            next_retry, source = honoured, "retry-after"
    return replace(
        state,
        consecutive_failures=failures,
        last_failure_at=now,
        next_retry_at=next_retry,
        retry_source=source,
    )


def record_success(state: RenewalState | None = None, *, now: datetime) -> RenewalState:
    """The state for a freshly installed certificate.

    Failures are cleared and the ARI window forgotten: it belonged to the
    certificate just replaced, and the new one gets its own (so its
    renewalInfo is due for a fetch at once, as RFC 9773 §4.3 suggests).
    """
    del state  # Nothing carries over except the time of this success.
    return RenewalState(last_success_at=_utc(now, "now"))


def _ari_state(
    state: RenewalState, ari: RenewalInfo | None, rng: RandomSource
) -> tuple[RenewalState, bool]:
    """Fold fresh ARI into the state; choose a moment when the window is new.

    Returns the new state and whether a new moment was chosen.
    """
    if ari is None:
        return state, False
    state = replace(state, ari_explanation_url=ari.explanation_url, ari_next_check=ari.next_check)
    if state.ari_window == ari.window and state.ari_chosen_at is not None:
        return state, False
    chosen = ari.window.choose(rng)
    return replace(state, ari_window=ari.window, ari_chosen_at=chosen), True


def decide(
    cert: x509.Certificate | HasValidity,
    ari: RenewalInfo | None = None,
    *,
    now: datetime,
    state: RenewalState | None = None,
    rng: RandomSource | None = None,
    force: bool = False,
    next_run: datetime | None = None,
) -> RenewalDecision:
    """Decide whether ``cert`` should be renewed at ``now``.

    ``cert`` is an ``x509.Certificate`` or anything with ``not_before`` and
    ``not_after`` (a meta record). ``ari`` is freshly fetched renewal info, or
    None (CA without ARI, fetch skipped because of ``Retry-After``, or fetch
    failed); without it the window stored in ``state`` is used, if any.
    ``rng`` picks the moment in a new ARI window (default: a fresh
    ``random.Random``). ``next_run`` is when the caller will run next (e.g.
    ``now + 12h`` under the twice-daily timer); an ARI moment before it
    makes the certificate due now. ``force`` renews regardless of schedule
    and backoff.

    Always returns the state to persist in ``decision.state``.
    """
    now = _utc(now, "now")
    validity = Validity.of(cert)
    state, chose = _ari_state(state or RenewalState(), ari, _default_rng(rng))
    if chose:
        logger.debug("chose ARI renewal moment %s", _iso(state.ari_chosen_at))

    base = _base_decision(validity, state, now=now, force=force, next_run=next_run)
    if force or not base.due:
        return base
    if state.next_retry_at is not None and now < state.next_retry_at:
        source: Source = state.retry_source or "backoff"
        why = "the CA asked to wait" if source == "retry-after" else "backing off"
        return RenewalDecision(
            due=False,
            at=state.next_retry_at,
            source=source,
            reason=(
                f"{base.reason}; but after {state.consecutive_failures} failed attempt(s) "
                f"{why} until {_iso(state.next_retry_at)}"
            ),
            state=state,
        )
    return base


def _base_decision(
    validity: Validity,
    state: RenewalState,
    *,
    now: datetime,
    force: bool,
    next_run: datetime | None,
) -> RenewalDecision:
    """The schedule alone, before failure backoff is applied."""
    if force:
        return RenewalDecision(True, now, "forced", "renewal forced", state)
    if now >= validity.not_after:
        return RenewalDecision(
            True,
            validity.not_after,
            "expired",
            f"expired at {_iso(validity.not_after)}",
            state,
        )
    window, chosen = state.ari_window, state.ari_chosen_at
    if window is not None and chosen is not None:
        span = f"{_iso(window.start)} .. {_iso(window.end)}"
        explain = f" (see {state.ari_explanation_url})" if state.ari_explanation_url else ""
        if now >= window.end:
            reason = f"the CA's suggested window {span} has passed{explain}"
            return RenewalDecision(True, min(chosen, window.end), "ari", reason, state)
        if now >= chosen:
            reason = f"moment {_iso(chosen)} chosen in the CA's window {span} has come{explain}"
            return RenewalDecision(True, chosen, "ari", reason, state)
        if next_run is not None and chosen < _utc(next_run, "next_run"):
            reason = (
                f"moment {_iso(chosen)} chosen in the CA's window {span} comes before "
                f"the next run at {_iso(next_run)}{explain}"
            )
            return RenewalDecision(True, chosen, "ari", reason, state)
        reason = f"moment {_iso(chosen)} chosen in the CA's window {span}{explain}"
        return RenewalDecision(False, chosen, "ari", reason, state)

    due_at = lifetime_renewal_time(validity)
    share = "half" if validity.lifetime < SHORT_LIFETIME else "a third"
    if now >= due_at:
        reason = f"{share} of its lifetime is left (due since {_iso(due_at)})"
        return RenewalDecision(True, due_at, "lifetime", reason, state)
    reason = f"due when {share} of its lifetime is left, at {_iso(due_at)}"
    return RenewalDecision(False, due_at, "lifetime", reason, state)


__all__ = [
    "DEFAULT_BACKOFF",
    "BackoffPolicy",
    "HasValidity",
    "RandomSource",
    "RenewalDecision",
    "RenewalInfo",
    "RenewalMeta",
    "RenewalState",
    "Source",
    "SuggestedWindow",
    "Validity",
    "ari_check_due",
    "decide",
    "lifetime_renewal_time",
    "meta_updates",
    "record_ari_error",
    "record_failure",
    "record_success",
    "state_from_meta",
]
