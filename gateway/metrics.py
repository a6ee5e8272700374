"""The gateway's Prometheus metrics: calls by function and status, and their time by part."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pool.contract import CallResult

# 1 ms to 10 s: a warm call takes a few milliseconds, a deadline tens of seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter(
            "scow_calls", "Calls answered, by function and status code.",
            ["function", "code"], registry=r,
        )  # fmt: skip
        self.call_seconds = Histogram(
            "scow_call_seconds", "Call latency by part: queue (waiting for a node), run, total.",
            ["function", "part"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "scow_calls_rejected", "Calls refused before queueing, by reason.",
            ["function", "reason"], registry=r,
        )  # fmt: skip
        self.node_heartbeat_age = Gauge(
            "scow_node_heartbeat_age_seconds", "Seconds since each node last reported.",
            ["node"], registry=r,
        )  # fmt: skip
        self.redis_rtt = Gauge("scow_redis_rtt_seconds", "Redis round-trip time.", registry=r)
        # The names OpenFaaS's gateway exports, so that its dashboards work unchanged.
        self.of_invocations = Counter(
            "gateway_function_invocation", "Function invocations (OpenFaaS name).",
            ["function_name", "code"], registry=r,
        )  # fmt: skip
        self.of_seconds = Histogram(
            "gateway_functions_seconds", "Function call time (OpenFaaS name).",
            ["function_name"], buckets=BUCKETS, registry=r,
        )  # fmt: skip

    def observe(self, function: str, result: CallResult, total: float) -> None:
        code = str(result.status)
        self.calls.labels(function, code).inc()
        self.of_invocations.labels(function, code).inc()
        self.of_seconds.labels(function).observe(total)
        self.call_seconds.labels(function, "total").observe(total)
        if result.node:  # a node took the call: its parts are known
            self.call_seconds.labels(function, "queue").observe(result.queue_seconds)
            self.call_seconds.labels(function, "run").observe(result.run_seconds)
