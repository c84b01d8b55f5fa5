"""The failure throttle on an injected clock: windows, lock-outs, keys, memory bound."""

from __future__ import annotations

import pytest

from throttle import AuthThrottle, FailureLimit, FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_limit_th_failure_locks_out_for_lockout_s(clock: Clock) -> None:
    throttle = FailureThrottle(FailureLimit(3, 60.0, 300.0), clock=clock)
    assert [throttle.failure("a") for _ in range(3)] == [False, False, True]
    assert throttle.locked("a") == pytest.approx(300.0)
    clock.now += 299.0
    assert throttle.locked("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert throttle.locked("a") is None
    # A fresh start after the lock-out: three more failures to the next one.
    assert [throttle.failure("a") for _ in range(3)] == [False, False, True]


def test_failures_spread_beyond_the_window_never_lock_out(clock: Clock) -> None:
    throttle = FailureThrottle(FailureLimit(3, 60.0, 300.0), clock=clock)
    for _ in range(10):
        assert throttle.failure("a") is False
        assert throttle.failure("a") is False
        clock.now += 61.0
    assert throttle.locked("a") is None


def test_trying_while_locked_out_does_not_extend_the_lock_out(clock: Clock) -> None:
    throttle = FailureThrottle(FailureLimit(1, 60.0, 100.0), clock=clock)
    assert throttle.failure("a")
    clock.now += 50.0
    assert throttle.failure("a") is False
    assert throttle.locked("a") == pytest.approx(50.0)


def test_keys_are_counted_apart_and_forgotten(clock: Clock) -> None:
    throttle = FailureThrottle(FailureLimit(2, 60.0, 100.0), clock=clock)
    throttle.failure("a")
    throttle.failure("b")
    throttle.forget("a")
    assert throttle.failure("a") is False
    assert throttle.failure("b") is True
    assert throttle.locked("a") is None


def test_memory_is_bounded_least_recently_failed_first(clock: Clock) -> None:
    throttle = FailureThrottle(FailureLimit(2, 60.0, 100.0), max_keys=100, clock=clock)
    throttle.failure("old")
    for i in range(1000):
        throttle.failure(f"flood-{i}")
    assert len(throttle) == 100
    assert throttle.failure("old") is False  # it was dropped: its count started again


def test_a_locked_out_identity_is_locked_from_that_source_only(clock: Clock) -> None:
    throttle = AuthThrottle(
        per_identity=FailureLimit(3, 600.0, 900.0),
        per_source=FailureLimit(100, 60.0, 300.0),
        clock=clock,
    )
    for _ in range(3):
        throttle.failed("10.0.0.66", "imei-1")
    assert throttle.refused("10.0.0.66", "imei-1") == pytest.approx(900.0)
    assert throttle.refused("10.0.0.7", "imei-1") is None  # the genuine box, elsewhere
    assert throttle.refused("10.0.0.66", "imei-2") is None


def test_a_flooding_source_is_locked_out_whatever_it_tries(clock: Clock) -> None:
    throttle = AuthThrottle(
        per_identity=FailureLimit(3, 600.0, 900.0),
        per_source=FailureLimit(5, 60.0, 300.0),
        clock=clock,
    )
    started = [throttle.failed("10.0.0.66", f"imei-{i}") for i in range(5)]
    assert started == [None, None, None, None, "source"]
    assert throttle.refused("10.0.0.66", "never-tried") == pytest.approx(300.0)
    assert throttle.refused("10.0.0.7", "imei-1") is None


def test_success_clears_the_pair_but_not_the_source(clock: Clock) -> None:
    throttle = AuthThrottle(
        per_identity=FailureLimit(2, 600.0, 900.0),
        per_source=FailureLimit(4, 60.0, 300.0),
        clock=clock,
    )
    throttle.failed("s", "a")
    throttle.failed("s", "b")
    throttle.succeeded("s", "a")
    assert throttle.failed("s", "a") is None  # the pair starts again at one
    assert throttle.failed("s", "c") == "source"  # the source's count did not


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FailureLimit(0, 60.0, 300.0)
