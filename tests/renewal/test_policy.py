"""certman.renewal: the renewal policy with injected clocks and random sources."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from renewal_certs import make_ca, make_leaf

from certman import CertificateMeta, FileStore
from certman.renewal import (
    BackoffPolicy,
    RenewalInfo,
    RenewalState,
    SuggestedWindow,
    Validity,
    ari_check_due,
    decide,
    lifetime_renewal_time,
    meta_updates,
    record_ari_error,
    record_failure,
    record_success,
    state_from_meta,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FixedRandom:
    """A random source that returns the values given, in order, and counts calls."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self.values.pop(0)


@dataclass(frozen=True)
class Meta:
    """Stands in for a store meta record: anything with not_before/not_after."""

    not_before: datetime
    not_after: datetime


def cert_of(days: float, start: datetime = T0) -> Meta:
    return Meta(start, start + timedelta(days=days))


def ari(
    start: datetime, end: datetime, *, fetched: datetime = T0, url: str | None = None
) -> RenewalInfo:
    return RenewalInfo(
        window=SuggestedWindow(start, end),
        next_check=fetched + timedelta(hours=6),
        fetched_at=fetched,
        cert_id="x.y",
        explanation_url=url,
    )


# -- lifetime rule -------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "due_after_days"),
    [(90, 60), (45, 30), (6, 3), (9.5, 4.75), (10, 10 * 2 / 3)],
)
def test_lifetime_rule(days: float, due_after_days: float) -> None:
    cert = cert_of(days)
    due_at = T0 + timedelta(days=due_after_days)
    assert lifetime_renewal_time(cert) == due_at

    before = decide(cert, now=due_at - timedelta(seconds=1))
    assert (before.due, before.source, before.at) == (False, "lifetime", due_at)
    at = decide(cert, now=due_at)
    assert (at.due, at.source, at.at) == (True, "lifetime", due_at)


def test_six_day_certificate_renews_at_half_lifetime_with_a_real_certificate() -> None:
    leaf = make_leaf(make_ca(), ["short.example"], not_before=T0, not_after=T0 + timedelta(days=6))
    assert not decide(leaf.cert, now=T0 + timedelta(days=2, hours=23)).due
    decision = decide(leaf.cert, now=T0 + timedelta(days=3))
    assert decision.due and decision.source == "lifetime"
    assert "half" in decision.reason


def test_expired_is_always_due() -> None:
    cert = cert_of(90)
    decision = decide(cert, now=T0 + timedelta(days=91))
    assert (decision.due, decision.source) == (True, "expired")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(cert_of(90), now=datetime(2026, 1, 1))


def test_forced_ignores_schedule_and_backoff() -> None:
    state = record_failure(None, now=T0, rng=FixedRandom(0.0))
    decision = decide(cert_of(90), now=T0 + timedelta(minutes=1), state=state, force=True)
    assert (decision.due, decision.source) == (True, "forced")


# -- ARI -----------------------------------------------------------------------


def test_ari_window_not_begun_then_begun() -> None:
    cert = cert_of(90)
    start, end = T0 + timedelta(days=50), T0 + timedelta(days=52)
    rng = FixedRandom(0.25)
    first = decide(cert, ari(start, end), now=T0 + timedelta(days=1), rng=rng)
    chosen = start + timedelta(hours=12)
    assert (first.due, first.source, first.at) == (False, "ari", chosen)
    assert first.state.ari_chosen_at == chosen
    assert first.state.ari_window == SuggestedWindow(start, end)

    # Later run, same window fetched again: the stored moment is reused, no new draw.
    later = decide(cert, ari(start, end), now=chosen, state=first.state, rng=rng)
    assert (later.due, later.at, later.source) == (True, chosen, "ari")
    assert rng.calls == 1


def test_ari_beats_lifetime_in_both_directions() -> None:
    cert = cert_of(90)  # lifetime rule: due at day 60
    # Window before the lifetime moment: ARI makes it due earlier.
    early = decide(
        cert,
        ari(T0 + timedelta(days=20), T0 + timedelta(days=21)),
        now=T0 + timedelta(days=21),
        rng=FixedRandom(0.5),
    )
    assert early.due and early.source == "ari"
    # Window after the lifetime moment: not due although 1/3 is left.
    late = decide(
        cert,
        ari(T0 + timedelta(days=70), T0 + timedelta(days=71)),
        now=T0 + timedelta(days=65),
        rng=FixedRandom(0.5),
    )
    assert not late.due and late.source == "ari"


def test_chosen_moment_survives_persistence_and_is_reused() -> None:
    cert = cert_of(45)
    info = ari(T0 + timedelta(days=29), T0 + timedelta(days=31))
    first = decide(cert, info, now=T0, rng=random.Random(7))
    stored = json.loads(json.dumps(first.state.to_dict()))
    state = RenewalState.from_dict(stored)
    assert state == first.state

    # No fresh ARI this run (Retry-After not reached): the stored window and moment decide.
    again = decide(cert, None, now=T0 + timedelta(days=1), state=state, rng=FixedRandom())
    assert again.at == first.at and again.source == "ari" and not again.due
    assert again.state.ari_chosen_at == first.state.ari_chosen_at


def test_window_change_chooses_again() -> None:
    cert = cert_of(90)
    first = decide(
        cert, ari(T0 + timedelta(days=60), T0 + timedelta(days=62)), now=T0, rng=FixedRandom(0.5)
    )
    assert first.at == T0 + timedelta(days=61)
    # The CA moves the window earlier (e.g. a revocation event): a new moment is drawn.
    moved = ari(T0 + timedelta(days=2), T0 + timedelta(days=3), url="https://ca.example/incident")
    second = decide(
        cert, moved, now=T0 + timedelta(days=1), state=first.state, rng=FixedRandom(0.0)
    )
    assert second.at == T0 + timedelta(days=2)
    assert second.state.ari_window == moved.window
    assert not second.due
    third = decide(cert, moved, now=T0 + timedelta(days=2), state=second.state, rng=FixedRandom())
    assert third.due and "https://ca.example/incident" in third.reason


def test_window_in_the_past_means_renew_now() -> None:
    cert = cert_of(90)
    past = ari(T0 - timedelta(days=2), T0 - timedelta(days=1))
    decision = decide(cert, past, now=T0, rng=FixedRandom(0.9))
    assert decision.due and decision.source == "ari" and "passed" in decision.reason


def test_moment_before_next_run_is_due_now() -> None:
    # RFC 9773 §4.2 step 4: if the moment falls before the next wake-up, renew now.
    cert = cert_of(90)
    info = ari(T0 + timedelta(hours=1), T0 + timedelta(hours=5))
    rng = FixedRandom(0.5)
    no_hint = decide(cert, info, now=T0, rng=rng)
    assert not no_hint.due
    hinted = decide(cert, info, now=T0, state=no_hint.state, next_run=T0 + timedelta(hours=12))
    assert hinted.due and hinted.at == T0 + timedelta(hours=3)
    far = decide(cert, info, now=T0, state=no_hint.state, next_run=T0 + timedelta(hours=2))
    assert not far.due


def test_ari_fetch_retry_after_is_stored_and_checked() -> None:
    cert = cert_of(90)
    info = ari(T0 + timedelta(days=60), T0 + timedelta(days=61), fetched=T0)
    state = decide(cert, info, now=T0, rng=FixedRandom(0.1)).state
    assert state.ari_next_check == T0 + timedelta(hours=6)
    assert not ari_check_due(state, cert, now=T0 + timedelta(hours=5))
    assert ari_check_due(state, cert, now=T0 + timedelta(hours=6))
    assert ari_check_due(None, cert, now=T0)
    # Never after expiry (RFC 9773 §4.3).
    assert not ari_check_due(None, cert, now=T0 + timedelta(days=90))


def test_ari_error_postpones_next_check_and_keeps_window() -> None:
    cert = cert_of(90)
    state = decide(
        cert, ari(T0 + timedelta(days=60), T0 + timedelta(days=61)), now=T0, rng=FixedRandom(0.0)
    ).state
    failed = record_ari_error(state, now=T0 + timedelta(hours=7))
    assert failed.ari_next_check == T0 + timedelta(hours=13)
    assert failed.ari_window == state.ari_window
    told = record_ari_error(state, now=T0, retry_after=T0 + timedelta(minutes=30))
    assert told.ari_next_check == T0 + timedelta(minutes=30)


def test_invalid_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at or before"):
        SuggestedWindow(T0, T0)


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_chosen_moment_is_inside_the_window(fraction: float) -> None:
    window = SuggestedWindow(T0, T0 + timedelta(days=2, seconds=7))
    moment = window.choose(FixedRandom(fraction))
    assert window.start <= moment < window.end


def test_choices_spread_over_the_window() -> None:
    window = SuggestedWindow(T0, T0 + timedelta(days=1))
    rng = random.Random(1234)
    hours = {(window.choose(rng) - T0) // timedelta(hours=1) for _ in range(500)}
    assert hours == set(range(24))


# -- failures and backoff ------------------------------------------------------


def test_backoff_schedule_grows_and_caps() -> None:
    policy = BackoffPolicy(jitter=0.0)
    delays = [policy.delay(n, FixedRandom(0.0)) for n in range(1, 12)]
    assert delays[:4] == [timedelta(minutes=m) for m in (10, 20, 40, 80)]
    assert delays[-1] == timedelta(days=1)
    assert delays == sorted(delays)


def test_backoff_jitter_only_lengthens() -> None:
    policy = BackoffPolicy(jitter=0.1)
    assert policy.delay(1, FixedRandom(0.0)) == timedelta(minutes=10)
    assert policy.delay(1, FixedRandom(0.5)) == timedelta(minutes=10.5)


def test_backoff_cap_shrinks_near_expiry() -> None:
    policy = BackoffPolicy(jitter=0.0)
    not_after = T0 + timedelta(hours=8)
    assert policy.delay(20, FixedRandom(0.0), now=T0, not_after=not_after) == timedelta(hours=2)
    expired = policy.delay(20, FixedRandom(0.0), now=T0, not_after=T0 - timedelta(days=1))
    assert expired == timedelta(hours=1)


def test_failure_backs_off_a_due_certificate() -> None:
    cert = cert_of(90)
    now = T0 + timedelta(days=61)  # due by lifetime
    state = record_failure(None, now=now, rng=FixedRandom(0.0), not_after=cert.not_after)
    assert state.consecutive_failures == 1 and state.next_retry_at == now + timedelta(minutes=10)

    waiting = decide(cert, now=now + timedelta(minutes=5), state=state)
    assert (waiting.due, waiting.source, waiting.at) == (False, "backoff", state.next_retry_at)
    assert "1 failed attempt" in waiting.reason
    assert decide(cert, now=now + timedelta(minutes=10), state=state).due

    state2 = record_failure(state, now=now + timedelta(minutes=10), rng=FixedRandom(0.0))
    assert state2.consecutive_failures == 2
    assert state2.next_retry_at == now + timedelta(minutes=30)


def test_retry_after_from_the_ca_wins_when_later() -> None:
    cert = cert_of(90)
    now = T0 + timedelta(days=61)
    state = record_failure(
        None, now=now, retry_after=now + timedelta(hours=3), rng=FixedRandom(0.0)
    )
    assert state.retry_source == "retry-after"
    decision = decide(cert, now=now + timedelta(hours=1), state=state)
    assert (decision.due, decision.source) == (False, "retry-after")
    assert decision.at == now + timedelta(hours=3)
    # An earlier Retry-After does not shorten the backoff.
    short = record_failure(
        None, now=now, retry_after=now + timedelta(seconds=5), rng=FixedRandom(0.0)
    )
    assert short.retry_source == "backoff" and short.next_retry_at == now + timedelta(minutes=10)
    # An absurd one is capped.
    huge = record_failure(
        None, now=now, retry_after=now + timedelta(days=400), rng=FixedRandom(0.0)
    )
    assert huge.next_retry_at == now + timedelta(days=7)


def test_backoff_does_not_hide_a_not_due_schedule() -> None:
    cert = cert_of(90)
    state = record_failure(None, now=T0, rng=FixedRandom(0.0))
    decision = decide(cert, now=T0 + timedelta(minutes=1), state=state)
    assert (decision.due, decision.source) == (False, "lifetime")


def test_success_resets_failures_and_forgets_the_window() -> None:
    cert = cert_of(90)
    state = decide(
        cert, ari(T0 + timedelta(days=60), T0 + timedelta(days=61)), now=T0, rng=FixedRandom(0.3)
    ).state
    state = record_failure(state, now=T0, rng=FixedRandom(0.0))
    fresh = record_success(state, now=T0 + timedelta(days=61))
    assert fresh == RenewalState(last_success_at=T0 + timedelta(days=61))


# -- persistence -----------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state = RenewalState(
        ari_window=SuggestedWindow(T0, T0 + timedelta(days=1)),
        ari_chosen_at=T0 + timedelta(hours=5, microseconds=17),
        ari_explanation_url="https://ca.example/why",
        ari_next_check=T0 + timedelta(hours=6),
        consecutive_failures=3,
        last_failure_at=T0,
        next_retry_at=T0 + timedelta(hours=1),
        retry_source="retry-after",
        last_success_at=T0 - timedelta(days=30),
    )
    data = json.loads(json.dumps(state.to_dict()))
    assert data["ari_window"]["start"] == "2026-01-01T00:00:00Z"
    assert RenewalState.from_dict(data) == state
    assert RenewalState.from_dict(None) == RenewalState()
    assert RenewalState.from_dict({}) == RenewalState()


@pytest.mark.parametrize(
    "bad",
    [
        {"consecutive_failures": -1},
        {"consecutive_failures": "2"},
        {"retry_source": "whim"},
        {"ari_window": {"start": "2026-01-02T00:00:00Z"}},
        {"ari_window": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}},
        {"ari_chosen_at": "yesterday"},
        {"ari_chosen_at": "2026-01-01T00:00:00"},
    ],
)
def test_malformed_state_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RenewalState.from_dict(bad)


def test_validity_of_certificate_and_meta_agree() -> None:
    leaf = make_leaf(make_ca(), ["a.example"], not_before=T0, not_after=T0 + timedelta(days=45))
    assert (
        Validity.of(leaf.cert) == Validity.of(cert_of(45)) == Validity(T0, T0 + timedelta(days=45))
    )


# -- the store's meta ------------------------------------------------------------------


def test_state_survives_the_file_store_meta(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "home")
    cert = cert_of(45)
    meta = CertificateMeta(name="shop", names=("shop.example",), extra={"mine": 1})
    info = ari(T0 + timedelta(days=29), T0 + timedelta(days=31), url="https://ca.example/why")
    decision = decide(cert, info, now=T0, rng=FixedRandom(0.5), state=state_from_meta(meta))
    failed = record_failure(
        decision.state, now=T0, retry_after=T0 + timedelta(hours=2), rng=FixedRandom(0.0)
    )
    store.save_meta(replace(meta, **meta_updates(failed, meta)))

    loaded = store.load_meta("shop")
    assert loaded.ari_chosen_time == T0 + timedelta(days=30)
    assert loaded.extra["mine"] == 1
    assert state_from_meta(loaded) == failed
    # Next run: the chosen moment and the CA's Retry-After are remembered.
    again = decide(cert, None, now=T0 + timedelta(hours=1), state=state_from_meta(loaded))
    assert again.at == T0 + timedelta(days=30) and again.source == "ari"

    # Success clears the failure bookkeeping, including the retry source in extra.
    done = record_success(failed, now=T0 + timedelta(days=30))
    store.save_meta(replace(loaded, **meta_updates(done, loaded)))
    final = store.load_meta("shop")
    assert state_from_meta(final) == done
    assert final.extra == {"mine": 1}


def test_invalid_stored_window_is_ignored() -> None:
    meta = CertificateMeta(
        name="x",
        names=("x.example",),
        ari_window_start=T0 + timedelta(days=2),
        ari_window_end=T0 + timedelta(days=1),
        ari_chosen_time=T0,
    )
    state = state_from_meta(meta)
    assert state.ari_window is None and state.ari_chosen_at is None
    assert decide(cert_of(90), now=T0, state=state).source == "lifetime"


# -- properties ------------------------------------------------------------------------


@given(
    lifetime_hours=st.integers(min_value=1, max_value=400 * 24),
    elapsed=st.floats(min_value=0.0, max_value=1.5),
)
def test_lifetime_due_iff_now_reaches_the_due_moment(lifetime_hours: int, elapsed: float) -> None:
    cert = cert_of(lifetime_hours / 24)
    now = T0 + timedelta(hours=lifetime_hours * elapsed)
    decision = decide(cert, now=now)
    expected_at = lifetime_renewal_time(cert)
    if now >= cert.not_after:
        assert decision.due and decision.source == "expired"
    else:
        assert decision.source == "lifetime" and decision.at == expected_at
        assert decision.due == (now >= expected_at)
    left = cert.not_after - expected_at
    share = 2 if lifetime_hours < 240 else 3
    assert abs(left - (cert.not_after - cert.not_before) / share) < timedelta(microseconds=2)


@given(
    start_h=st.integers(min_value=-100, max_value=2000),
    span_h=st.integers(min_value=1, max_value=200),
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    later_h=st.integers(min_value=0, max_value=3000),
)
def test_ari_once_due_stays_due(start_h: int, span_h: int, fraction: float, later_h: int) -> None:
    cert = cert_of(120)
    start = T0 + timedelta(hours=start_h)
    info = ari(start, start + timedelta(hours=span_h))
    first = decide(cert, info, now=T0, rng=FixedRandom(fraction))
    assert info.window.start <= first.at < info.window.end
    later = T0 + timedelta(hours=later_h)
    again = decide(cert, info, now=later, state=first.state, rng=FixedRandom())
    assert again.at == first.at or again.source == "expired"
    if first.due:
        assert again.due


def test_decision_to_dict_is_json() -> None:
    decision = decide(cert_of(90), now=T0)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data == {
        "due": False,
        "at": "2026-03-02T00:00:00Z",
        "source": "lifetime",
        "reason": decision.reason,
        "consecutive_failures": 0,
    }
