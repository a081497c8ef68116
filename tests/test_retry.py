"""The one retry helper (`kernelbox._retry`): schedules and limits, no clock, no I/O."""

from __future__ import annotations

import math

import pytest

from kernelbox._retry import Backoff, Retries

pytestmark = pytest.mark.unit


def _delays(retries: Retries, count: int) -> list[float | None]:
    return [retries.next_delay() for _ in range(count)]


def test_a_constant_backoff_waits_the_same_each_time() -> None:
    assert [Backoff(1.5).delay(n) for n in (1, 2, 10)] == [1.5, 1.5, 1.5]


def test_a_linear_backoff_grows_by_its_first_wait() -> None:
    assert [Backoff(0.25, growth="linear").delay(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]


def test_an_exponential_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.5, growth="exponential", max_seconds=3.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_huge_retry_number_stays_at_the_cap() -> None:
    assert Backoff(0.5, growth="exponential", max_seconds=30.0).delay(10_000) == 30.0


def test_retries_stop_at_the_limit() -> None:
    retries = Retries(limit=3, backoff=Backoff(0.2, growth="linear"))
    assert _delays(retries, 5) == [0.2, 0.4, pytest.approx(0.6), None, None]
    assert retries.count == 3 and retries.exhausted


def test_no_retries_gives_up_at_once() -> None:
    retries = Retries(limit=0, backoff=Backoff(1.0))
    assert retries.exhausted and retries.next_delay() is None and retries.count == 0


def test_a_reset_starts_the_count_and_the_backoff_again() -> None:
    retries = Retries(limit=2, backoff=Backoff(1.0, growth="exponential"))
    assert _delays(retries, 3) == [1.0, 2.0, None]
    retries.reset()
    assert retries.count == 0 and _delays(retries, 1) == [1.0]


def test_no_limit_never_gives_up() -> None:
    retries = Retries(limit=None, backoff=Backoff(0.0))
    assert _delays(retries, 1000) == [0.0] * 1000 and not retries.exhausted


@pytest.mark.parametrize("seconds", [-1.0, math.nan])
def test_a_negative_or_nan_wait_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="durations must be >= 0 seconds"):
        Backoff(seconds)


def test_an_unknown_growth_is_refused() -> None:
    with pytest.raises(ValueError, match="growth must be"):
        Backoff(1.0, growth="quadratic")  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [-1, True, 1.5])
def test_a_bad_limit_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="retry limit"):
        Retries(limit=limit, backoff=Backoff(1.0))  # type: ignore[arg-type]


def test_retries_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        Backoff(1.0).delay(0)
