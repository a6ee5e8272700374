"""The metrics a gateway and every node both export, each from where it stands: their
names are part of the contract (dashboards read them across both)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# 1 ms to 10 s: a warm call takes a few milliseconds, a cold python start a second.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def call_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """``scow_calls_total{function,code}`` and ``scow_call_seconds{function,part}``: the
    gateway and every node export both, each from where it stands."""
    calls = Counter(
        "scow_calls", "Calls answered, by function and status code.",
        ["function", "code"], registry=registry,
    )  # fmt: skip
    seconds = Histogram(
        "scow_call_seconds", "Call latency by part: queue (waiting for a node), run, total.",
        ["function", "part"], buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    return calls, seconds
