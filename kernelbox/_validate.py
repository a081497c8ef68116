"""Argument checks shared by the client and the gateway's configuration (pure).

Durations are float seconds and sizes/counts are ints; None means "no limit" where allowed.
A wrong type raises `TypeError`, a wrong value `ValueError`, each naming the argument.
"""

from __future__ import annotations

import math

__all__ = ["check_int", "check_seconds"]


def check_int(name: str, value: object, *, minimum: int, allow_none: bool = False) -> int | None:
    """`value` as an int of at least `minimum` (a bool is not an int here), or None if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def check_seconds(
    name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False, allow_inf: bool = False
) -> float | None:
    """`value` as float seconds: more than 0 (0 too with `allow_zero`), never NaN, finite unless
    `allow_inf`; None if `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__} {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or (math.isinf(seconds) and not allow_inf) or seconds < 0 or (
        seconds == 0 and not allow_zero
    ):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {'' if allow_inf else 'finite '}seconds, {bound}, not {value!r}")
    return seconds
