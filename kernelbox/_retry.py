"""Retrying: how many more tries an operation gets, and how long to wait before each.

Pure: no I/O and no clock. A loop that retries asks its `Retries` for the next delay after each
failure and sleeps that long itself (``anyio.sleep`` or ``time.sleep``, as the loop runs);
None means it gives up::

    retries = Retries(limit=5, backoff=Backoff(0.25, growth="linear"))
    while not await attempt():
        delay = retries.next_delay()
        if delay is None:
            raise ...                     # gave up after 1 + 5 tries
        await anyio.sleep(delay)          # the back-off, not a readiness signal

Used by the client's kernel creation and deletion and its WebSocket reconnection, and by the
gateway supervisor's restart policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Backoff", "Growth", "Retries"]

Growth = Literal["constant", "linear", "exponential"]


@dataclass(frozen=True)
class Backoff:
    """The wait before the n-th retry (n = 1, 2, ...), in seconds.

    Attributes:
        seconds: the wait before the first retry.
        growth: how the wait grows: ``"constant"`` (`seconds` each time), ``"linear"``
            (`seconds` × n) or ``"exponential"`` (`seconds` × 2 ** (n - 1)).
        max_seconds: the longest wait; ``inf`` for no cap.

    Raises:
        ValueError: a negative or NaN duration, or an unknown growth.
    """

    seconds: float
    growth: Growth = "constant"
    max_seconds: float = math.inf

    def __post_init__(self) -> None:
        if not self.seconds >= 0 or not self.max_seconds >= 0:  # "not >=" also catches NaN
            raise ValueError(f"back-off durations must be >= 0 seconds, not {self.seconds!r} and {self.max_seconds!r}")
        if self.growth not in ("constant", "linear", "exponential"):
            raise ValueError(f"growth must be 'constant', 'linear' or 'exponential', not {self.growth!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retries are numbered from 1, not {retry!r}")
        if self.growth == "linear":
            seconds = self.seconds * retry
        elif self.growth == "exponential":
            # min() first: 2 ** 2000 is a valid int but too large a float.
            seconds = self.seconds * 2.0 ** min(retry - 1, 1000)
        else:
            seconds = self.seconds
        return min(seconds, self.max_seconds)


class Retries:
    """Counts the retries of one operation against a limit.

    Args:
        limit: how many retries are allowed after the first try; None for no limit.
        backoff: the waits between tries.

    Attributes:
        count: the retries taken since the start or the last `reset()`.

    Raises:
        ValueError: `limit` is negative.
    """

    def __init__(self, limit: int | None, backoff: Backoff) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"the retry limit must be an int >= 0 or None, not {limit!r}")
        self.limit = limit
        self.backoff = backoff
        self.count = 0

    @property
    def exhausted(self) -> bool:
        """True when no retry is left."""
        return self.limit is not None and self.count >= self.limit

    def next_delay(self) -> float | None:
        """Take one retry: the seconds to wait before it, or None when the limit is reached."""
        if self.exhausted:
            return None
        self.count += 1
        return self.backoff.delay(self.count)

    def reset(self) -> None:
        """Start counting from zero again (after a success, or a stable period)."""
        self.count = 0
