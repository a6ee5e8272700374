"""The warm pool's sizing rule (pool/sizing.py): pure logic, table-driven."""

from __future__ import annotations

import pytest

from pool.sizing import ArrivalRate, MakeTimes, target


@pytest.mark.parametrize(
    ("kw", "size", "rule"),
    [
        # nothing going on: pool.min
        ({"peak": 0, "rate": 0.0}, 1, "min"),
        # reusable: the peak of calls at once, over the calls one takes
        ({"throwaway": False, "peak": 5, "rate": 100.0}, 5, "concurrency"),
        ({"throwaway": False, "concurrency": 4, "peak": 9, "rate": 100.0}, 3, "concurrency"),
        # throwaway: rate x make time, plus headroom for a burst
        ({"rate": 10.0, "make_seconds": 0.2}, 6, "rate"),  # 2 + 2*1.41 + 1
        ({"rate": 1.0, "make_seconds": 0.05}, 2, "rate"),  # a slow trickle: one spare
        ({"rate": 100.0, "make_seconds": 0.03}, 8, "rate"),  # 3 + 2*1.73 + 1
        # the peak wins when it is larger
        ({"peak": 9, "rate": 1.0, "make_seconds": 0.05}, 9, "concurrency"),
        # bounded by pool.max
        ({"rate": 50.0, "make_seconds": 1.0}, 16, "max"),
        ({"pool_min": 3, "rate": 0.5, "make_seconds": 0.1}, 3, "min"),
    ],
)
def test_target(kw: dict[str, object], size: int, rule: str) -> None:
    args: dict[str, object] = {"pool_min": 1, "pool_max": 16, "concurrency": 1,
                               "throwaway": True, "peak": 1, "rate": 0.0, "make_seconds": 0.1}
    decided = target(**{**args, **kw})  # type: ignore[arg-type]
    assert (decided.size, decided.rule) == (size, rule)


def test_the_rate_is_over_the_window_and_forgets() -> None:
    rate = ArrivalRate(window=10.0)
    for i in range(50):
        rate.arrived(1000.0 + i * 0.1)  # 10/s for 5 s
    assert rate.per_second(1005.0) == pytest.approx(10.0, rel=0.05)
    assert rate.per_second(1012.0) == pytest.approx(3.0, rel=0.1)  # the last 3 s of calls left
    assert rate.per_second(1100.0) == 0.0


def test_a_new_pool_sees_its_first_burst_at_its_own_rate() -> None:
    rate = ArrivalRate(window=10.0)
    for i in range(10):
        rate.arrived(50.0 + i * 0.01)
    assert rate.per_second(50.1) == 10.0  # 10 calls over (at least) a second, not over 10


def test_make_time_is_a_median_robust_to_one_slow_make() -> None:
    makes = MakeTimes()
    for s in (0.2, 0.21, 0.19, 3.0, 0.2):
        makes.made(s)
    assert makes.seconds == 0.2
