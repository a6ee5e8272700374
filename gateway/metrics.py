"""The gateway's Prometheus metrics: calls by function and status, and their time by part."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pool.contract.messages import CallResult
from pool.contract.metrics import BUCKETS, call_metrics


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls, self.call_seconds = call_metrics(r)
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
