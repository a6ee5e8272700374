"""A node's Prometheus metrics, served on its own port, and recent latencies for `scow top`.

Starts are observed when a call takes its container, so that N calls make N
observations: ``source`` says whether the container was made ahead (``pool``)
or the call waited for it (``cold``).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pool.contract.messages import CallResult
from pool.contract.metrics import BUCKETS, call_metrics
from pool.instances import Instance

PHASES = ("netns", "rootfs", "create", "start", "ready", "total")
RECENT = 500  # latencies kept per function for percentiles


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.starts = Histogram(
            "scow_container_start_seconds", "Container start latency by phase and source.",
            ["function", "phase", "source"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.calls, self.call_seconds = call_metrics(r)
        self.cold_starts = Counter(
            "scow_cold_starts", "Calls that waited for their container.", ["function"], registry=r
        )
        self.cold_start_errors = Counter(
            "scow_cold_start_errors", "Containers that failed to start.", ["function"], registry=r
        )
        self.oom_kills = Counter(
            "scow_oom_kills", "Calls whose container was OOM-killed.", ["function"], registry=r
        )
        self.timeouts = Counter(
            "scow_timeouts", "Calls past their deadline, by the part that ran out.",
            ["function", "part"], registry=r,
        )  # fmt: skip
        self.throttled = Counter(
            "scow_cpu_throttled_seconds", "CPU time calls were throttled for.", ["function"],
            registry=r,
        )  # fmt: skip
        self.pool = Gauge(
            "scow_pool_containers", "Containers per function by state.",
            ["function", "state"], registry=r,
        )  # fmt: skip
        self.queue = Gauge(
            "scow_queue_length", "Calls waiting or running.", ["function"], registry=r
        )
        # The pool's sizing decision and what it was made from (pool/sizing.py).
        self.target = Gauge(
            "scow_pool_target", "Containers the pool keeps ready or being made.",
            ["function", "rule"], registry=r,
        )  # fmt: skip
        self.rate = Gauge(
            "scow_call_rate", "Calls per second taken by the pool, recently.", ["function"],
            registry=r,
        )  # fmt: skip
        self.make_seconds = Gauge(
            "scow_make_seconds", "Time to make one container of the pool, recently.",
            ["function"], registry=r,
        )  # fmt: skip
        self.redis_rtt = Gauge("scow_redis_rtt_seconds", "Redis round-trip time.", registry=r)
        self._recent: dict[str, dict[str, collections.deque[float]]] = {}
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on ``port`` (0: any free one); the port."""
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- observations ---------------------------------------------------------------

    def started(self, inst: Instance) -> None:
        name = inst.spec.name
        for phase in PHASES:
            if phase in inst.phases:
                self.starts.labels(name, phase, inst.source).observe(inst.phases[phase])
        if inst.source == "cold":
            self.cold_starts.labels(name).inc()
        self._remember(name, "start", inst.phases.get("total", 0.0))

    def answered(self, function: str, result: CallResult) -> None:
        self.calls.labels(function, str(result.status)).inc()
        total = result.queue_seconds + result.run_seconds
        self.call_seconds.labels(function, "queue").observe(result.queue_seconds)
        self.call_seconds.labels(function, "run").observe(result.run_seconds)
        self.call_seconds.labels(function, "total").observe(total)
        if result.error == "oom":
            self.oom_kills.labels(function).inc()
        elif result.error == "timeout":
            self.timeouts.labels(function, result.part or "run").inc()
        elif result.error == "cold_start":
            self.cold_start_errors.labels(function).inc()
        if result.throttled_seconds:
            self.throttled.labels(function).inc(result.throttled_seconds)
        self._remember(function, "call", total)

    def pools(self, sizes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Each function's pool: its containers by state, and its sizing decision."""
        for function, pool in sizes:
            for state in ("warm", "busy", "creating", "draining"):
                self.pool.labels(function, state).set(pool[state])
            with contextlib.suppress(KeyError):  # the rule changed: one series at a time
                for rule in ("min", "concurrency", "rate", "max"):
                    if rule != pool["rule"]:
                        self.target.remove(function, rule)
            self.target.labels(function, pool["rule"]).set(pool["target"])
            self.rate.labels(function).set(pool["rate"])
            self.make_seconds.labels(function).set(pool["make_seconds"])

    def forget(self, function: str) -> None:
        """Drop a deleted function's gauges (counters keep their totals)."""
        for state in ("creating", "warm", "busy", "draining"):
            with contextlib.suppress(KeyError):
                self.pool.remove(function, state)
        for rule in ("min", "concurrency", "rate", "max"):
            with contextlib.suppress(KeyError):
                self.target.remove(function, rule)
        for gauge in (self.rate, self.make_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(function)
        with contextlib.suppress(KeyError):
            self.queue.remove(function)
        with self._lock:
            self._recent.pop(function, None)

    def _remember(self, function: str, kind: str, seconds: float) -> None:
        with self._lock:
            kinds = self._recent.setdefault(function, {})
            kinds.setdefault(kind, collections.deque(maxlen=RECENT)).append(seconds)

    def percentiles(self) -> dict[str, dict[str, float]]:
        """p50 and p99 of recent starts and calls per function, in seconds."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for function, kinds in self._recent.items():
                row = out.setdefault(function, {})
                for kind, values in kinds.items():
                    ordered = sorted(values)
                    row[f"{kind}_p50"] = _quantile(ordered, 0.5)
                    row[f"{kind}_p99"] = _quantile(ordered, 0.99)
        return out


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank).

    >>> _quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    """
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
