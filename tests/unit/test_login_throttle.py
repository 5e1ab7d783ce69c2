"""Login throttling slows the attacker without denying the owner: growing delays per (account, address)
and per address, never a lock on the account itself; registrations are slowed per address."""

from __future__ import annotations

import pytest

from central.application import auth


class FakeMonotonic:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


def fail(limiter: auth.LoginRateLimiter, account: str, address: str | None, times: int) -> None:
    for _ in range(times):
        limiter.record_failure(account, address)


def test_the_right_password_from_a_clean_address_is_never_refused() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    fail(limiter, "admin", "203.0.113.9", 500)  # an attacker hammering admin from one address
    limiter.check("ADMIN", "198.51.100.7")  # the owner, elsewhere: not even slowed
    with pytest.raises(auth.LoginThrottled):
        limiter.check("admin", "203.0.113.9")


def test_a_pair_gets_a_few_free_attempts_then_growing_delays() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    fail(limiter, "ann", "10.0.0.1", limiter.pair.free)
    limiter.check("ann", "10.0.0.1")  # typos are free
    waits = []
    for _ in range(5):
        limiter.record_failure("ann", "10.0.0.1")
        with pytest.raises(auth.LoginThrottled) as caught:
            limiter.check("ann", "10.0.0.1")
        waits.append(caught.value.retry_after_s)
        clock.s += caught.value.retry_after_s
        limiter.check("ann", "10.0.0.1")  # the delay is over: one more try
    assert waits == sorted(waits) and waits[-1] == pytest.approx(16 * waits[0])


def test_delays_are_capped() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    fail(limiter, "ann", "10.0.0.1", 200)
    with pytest.raises(auth.LoginThrottled) as caught:
        limiter.check("ann", "10.0.0.1")
    assert caught.value.retry_after_s == pytest.approx(limiter.pair.max_s)


def test_an_address_failing_across_many_accounts_is_slowed_for_every_account() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    for i in range(limiter.address.free):
        limiter.record_failure(f"user{i}", "10.0.0.9")
    limiter.check("fresh-user", "10.0.0.9")
    limiter.record_failure("another", "10.0.0.9")
    with pytest.raises(auth.LoginThrottled):
        limiter.check("fresh-user", "10.0.0.9")
    limiter.check("fresh-user", "10.0.0.10")


def test_a_success_clears_the_pair_but_not_the_address() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    fail(limiter, "ann", "10.0.0.1", limiter.pair.free)
    limiter.record_success("ann", "10.0.0.1")
    fail(limiter, "ann", "10.0.0.1", limiter.pair.free)
    limiter.check("ann", "10.0.0.1")
    assert len(limiter) == 2  # the pair and the address


def test_quiet_keys_are_forgotten() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    fail(limiter, "ann", "10.0.0.1", 50)
    clock.s += limiter.pair.forget_s + 1
    limiter.check("ann", "10.0.0.1")
    limiter.record_failure("ann", "10.0.0.1")
    limiter.check("ann", "10.0.0.1")  # counting starts over


def test_without_an_address_only_the_account_pair_counts() -> None:
    limiter = auth.LoginRateLimiter(clock=FakeMonotonic())
    fail(limiter, "ann", None, limiter.pair.free + 1)
    with pytest.raises(auth.LoginThrottled):
        limiter.check("ann", None)
    limiter.check("bob", None)


def test_limiter_memory_is_bounded() -> None:
    limiter = auth.LoginRateLimiter(max_keys=100, clock=FakeMonotonic())
    for i in range(1000):
        limiter.record_failure(f"user{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) <= 200


def test_registrations_from_one_address_are_slowed() -> None:
    clock = FakeMonotonic()
    limiter = auth.LoginRateLimiter(clock=clock)
    for _ in range(limiter.registration.free + 1):
        limiter.check_registration("10.0.0.5")
        limiter.record_registration("10.0.0.5")
    with pytest.raises(auth.LoginThrottled) as caught:
        limiter.check_registration("10.0.0.5")
    limiter.check_registration("10.0.0.6")
    clock.s += caught.value.retry_after_s
    limiter.check_registration("10.0.0.5")
