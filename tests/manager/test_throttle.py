"""The local rate limit: a token bucket with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from certman.errors import ConfigError
from certman.manager import DEFAULT_LIMITS, RateLimits, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_burst_then_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 1 / 10, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(10)
    clock.now += 5
    assert not bucket.acquire()
    clock.now += 5
    assert bucket.acquire()
    clock.now += 1000
    assert [bucket.acquire() for _ in range(4)] == [True, True, True, False]  # capped


def test_acquire_waits_up_to_max_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1 / 10, clock=clock, sleep=clock.sleep)
    assert bucket.acquire()
    assert not bucket.acquire(max_wait=9)
    assert clock.slept == []
    assert bucket.acquire(max_wait=10)
    assert clock.slept == [pytest.approx(10)]


def test_defaults_stay_inside_lets_encrypt_limits() -> None:
    # Let's Encrypt: 300 new orders per account per 3 hours, 10 accounts per IP per 3 hours.
    assert DEFAULT_LIMITS.new_orders is not None and DEFAULT_LIMITS.new_accounts is not None
    burst, per = DEFAULT_LIMITS.new_orders
    assert burst < 300 and burst / per <= 300 / (3 * 3600)
    burst, per = DEFAULT_LIMITS.new_accounts
    assert burst < 10 and burst / per <= 10 / (3 * 3600)
    assert RateLimits(new_orders=None).bucket("new_orders") is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigError):
        TokenBucket(0, 1)
    with pytest.raises(ConfigError):
        TokenBucket(1, 0)
