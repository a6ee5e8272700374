"""Metrics, call records, events and a real Prometheus scraping a node."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from images.store import ImageStore
from pool.manager import PoolManager
from runtime.engine import Runtime
from tests.gateway.test_functions_api import eventually
from tests.utils import free_port

WC = {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio", "pool": {"max": 4}}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_200_calls_make_200_starts(api: httpx.AsyncClient, manager: PoolManager) -> None:
    assert (await api.post("/system/functions", json=WC)).status_code == 201
    for batch in range(10):
        responses = await asyncio.gather(*(api.post("/function/wc", content=b"x y\n")
                                           for _ in range(20)))  # fmt: skip
        assert [r.status_code for r in responses] == [200] * 20, batch
    registry = manager.metrics.registry
    assert sample(registry, "scow_calls_total", function="wc", code="200") == 200
    starts = sample(registry, "scow_container_start_seconds_count", function="wc", phase="total")
    assert starts == 200
    cold = sample(registry, "scow_container_start_seconds_count", function="wc", phase="total",
                  source="cold")  # fmt: skip
    assert sample(registry, "scow_cold_starts_total", function="wc") == cold
    for phase in ("rootfs", "create"):
        assert sample(registry, "scow_container_start_seconds_count", function="wc",
                      phase=phase) == 200  # fmt: skip
    assert sample(registry, "scow_call_seconds_count", function="wc", part="run") == 200
    gateway = (await api.get("/metrics")).text
    assert 'gateway_function_invocation_total{code="200",function_name="wc"} 200.0' in gateway
    assert 'gateway_functions_seconds_count{function_name="wc"} 200.0' in gateway
    assert "scow_node_heartbeat_age_seconds{node=" in gateway

    listed = (await api.get("/system/calls", params={"function": "wc", "limit": 5})).json()
    assert len(listed) == 5 and all(r["status"] == 200 for r in listed)
    assert all(r["cpu_seconds"] >= 0 and r["start_seconds"] > 0 for r in listed)


async def test_pool_and_cold_starts_are_told_apart(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    # pool.min 0 and nothing called yet: no container waits, so the first call is cold;
    # its demand then keeps one ready, and the next call finds it.
    spec = {**WC, "name": "lazy", "pool": {"min": 0, "max": 2}}
    assert (await api.post("/system/functions", json=spec)).status_code == 201
    await asyncio.sleep(0.3)
    first = await api.post("/function/lazy", content=b"a")
    assert first.headers["x-scow-cold"] == "1"

    async def one_ready() -> bool:
        worker = manager.workers.get("lazy")
        return worker is not None and len(worker.pool.ready) == 1

    await eventually(one_ready)
    second = await api.post("/function/lazy", content=b"b")
    assert second.headers["x-scow-cold"] == "0"
    registry = manager.metrics.registry
    count = "scow_container_start_seconds_count"
    assert sample(registry, count, function="lazy", phase="total", source="cold") == 1
    assert sample(registry, count, function="lazy", phase="total", source="pool") == 1
    assert sample(registry, "scow_cold_starts_total", function="lazy") == 1
    record = (await api.get(f"/system/calls/{first.headers['x-call-id']}")).json()
    assert record["cold"] is True and record["start_seconds"] > 0


async def test_an_oom_kill_is_counted_recorded_and_an_event(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    ooms = {"filters": json.dumps({"type": ["container"], "event": ["oom"]})}
    async with api.stream("GET", "/events", params=ooms) as events:
        hog = {"name": "hog", "image": "busybox", "protocol": "stdio", "memory": "32m",
               "command": "dd if=/dev/zero of=/dev/null bs=64M"}  # fmt: skip
        assert (await api.post("/system/functions", json=hog)).status_code == 201
        response = await api.post("/function/hog")
        assert response.status_code == 502 and response.json()["error"] == "oom"
        line = await asyncio.wait_for(anext(events.aiter_lines()), 10)
    event = json.loads(line)
    assert event["Action"] == "oom" and event["Actor"]["Attributes"]["scow.function"] == "hog"
    assert event["Actor"]["ID"] == (await api.get(
        f"/system/calls/{response.headers['x-call-id']}")).json()["container"]  # fmt: skip
    assert sample(manager.metrics.registry, "scow_oom_kills_total", function="hog") == 1
    record = (await api.get(f"/system/calls/{response.headers['x-call-id']}")).json()
    assert record["error"] == "oom" and record["status"] == 502


async def test_events_replay_and_filter(api: httpx.AsyncClient, manager: PoolManager) -> None:
    assert (await api.post("/system/functions", json=WC)).status_code == 201
    await api.post("/function/wc", content=b"x")
    await api.request("DELETE", "/system/functions", json={"functionName": "wc"})
    window = {"since": "0", "until": str(time.time() + 1),
              "filters": json.dumps({"function": ["wc"]})}  # fmt: skip
    replay = await api.get("/events", params=window)
    seen = [(e["Type"], e["Action"]) for e in map(json.loads, replay.text.splitlines())]
    # The delete comes before the node destroys the function's warm containers.
    assert seen[0] == ("function", "create") and ("function", "delete") in seen
    for action in ("create", "start", "die", "destroy"):
        assert ("container", action) in seen, seen
    bad = await api.get("/events", params={"filters": '{"colour": ["red"]}'})
    assert bad.status_code == 400


@pytest.fixture
def prometheus_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="scow-prom-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
async def test_prometheus_reads_start_latency_quantiles(
    api: httpx.AsyncClient, redis_client: aioredis.Redis, runtime: Runtime,
    function_images: ImageStore, prometheus_dir: Path,
) -> None:  # fmt: skip
    node = PoolManager(redis_client, runtime, function_images, sync_every=0.05, metrics_port=0)
    await node.start()
    prom_port = free_port()
    config = prometheus_dir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: scow-node\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{node.metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={prometheus_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert (await api.post("/system/functions", json=WC)).status_code == 201
        for _ in range(20):
            assert (await api.post("/function/wc", content=b"x")).status_code == 200
        query = ('histogram_quantile(0.5, sum by (le) '
                 '(scow_container_start_seconds_bucket{function="wc",phase="total"}))')  # fmt: skip

        async def median() -> float | None:
            try:
                async with httpx.AsyncClient() as prom:
                    answer = (await prom.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                                             params={"query": query})).json()  # fmt: skip
            except httpx.HTTPError:
                return None
            result = answer.get("data", {}).get("result", [])
            return float(result[0]["value"][1]) if result else None

        value = await eventually(median, timeout=60)
        assert 0.001 < value < 10, value
    finally:
        prometheus.terminate()
        prometheus.wait(20)
        await node.stop()
