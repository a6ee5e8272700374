"""How many instances a warm pool keeps ready or being made: pure logic.

Two rules, the larger wins, bounded by ``pool.min`` below and ``pool.max`` above:

- **Concurrency** (every function): as many instances as calls recently ran at once
  (the peak over the last ``idle_ttl``), divided by the calls one takes at once. A
  reusable instance goes back to the pool after its call, so this is all it needs.
- **Arrival rate** (throwaway functions, ``max_invocations`` 1): every call uses up an
  instance, and its replacement takes the function's make time. By Little's law
  ``rate x make time`` replacements are being made at any moment; keeping that many
  ready or in the making, plus headroom for bursts (two standard deviations of a
  Poisson arrival count over one make time, and one more), means a call finds one
  ready. The rate is measured over the last ``RATE_WINDOW`` seconds of this pool's
  own calls, the make time from its own recent instances.

What the node can make at once (its slots) bounds how fast replacements come; the
target can ask for more than that, and the surplus waits for a slot.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

RATE_WINDOW = 10.0  # seconds of arrivals the rate is measured over
MAKE_SAMPLES = 20  # recent make times the estimate is taken from
DEFAULT_MAKE_SECONDS = 0.1  # before a pool has made any instance


class ArrivalRate:
    """Calls per second over the last ``window`` seconds.

    >>> r = ArrivalRate(window=10.0)
    >>> for t in range(20):
    ...     r.arrived(100.0 + t * 0.5)
    >>> r.per_second(110.0)
    2.0
    >>> r.per_second(200.0)
    0.0
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def arrived(self, now: float) -> None:
        self._times.append(now)
        self._forget(now)

    def per_second(self, now: float) -> float:
        self._forget(now)
        if not self._times:
            return 0.0
        # Over the whole window once it is full; over the time since the first call in
        # it before (a pool a second old that took 10 calls sees 10/s, not 1/s).
        span = min(self.window, max(now - self._times[0], 1.0))
        return len(self._times) / span

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()


class MakeTimes:
    """The time to make an instance: the median of the last ``MAKE_SAMPLES``.

    >>> m = MakeTimes()
    >>> m.seconds
    0.1
    >>> for s in (0.2, 0.3, 5.0):
    ...     m.made(s)
    >>> m.seconds
    0.3
    """

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=MAKE_SAMPLES)

    def made(self, seconds: float) -> None:
        self._samples.append(seconds)

    @property
    def seconds(self) -> float:
        if not self._samples:
            return DEFAULT_MAKE_SECONDS
        ordered = sorted(self._samples)
        return ordered[len(ordered) // 2]


@dataclass(frozen=True)
class Target:
    """A pool's decision, and what it was made from (shown by `scow top` and metrics)."""

    size: int  # instances to keep ready or being made
    rate: float  # calls per second, recently
    make_seconds: float  # to make one instance, recently
    rule: str  # "min", "concurrency", "rate" or "max": which bound decided


def target(
    *, pool_min: int, pool_max: int, concurrency: int, throwaway: bool, peak: int,
    rate: float, make_seconds: float,
) -> Target:  # fmt: skip
    """The number of instances to keep ready or being made.

    >>> target(pool_min=1, pool_max=16, concurrency=1, throwaway=True, peak=1,
    ...        rate=10.0, make_seconds=0.2)
    Target(size=6, rate=10.0, make_seconds=0.2, rule='rate')
    >>> target(pool_min=1, pool_max=16, concurrency=4, throwaway=False, peak=9,
    ...        rate=50.0, make_seconds=0.2).size  # reusable: calls at once / concurrency
    3
    """
    size, rule = pool_min, "min"
    by_concurrency = math.ceil(peak / max(concurrency, 1))
    if by_concurrency > size:
        size, rule = by_concurrency, "concurrency"
    if throwaway and rate > 0:
        making = rate * make_seconds  # Little's law: replacements in the making at once
        by_rate = math.ceil(making + 2 * math.sqrt(making) + 1)
        if by_rate > size:
            size, rule = by_rate, "rate"
    if size > pool_max:
        size, rule = pool_max, "max"
    return Target(size, rate, make_seconds, rule)
