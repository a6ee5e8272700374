"""Scale on one node: many functions, a long queue.

On a `scow up` of its own, on the bench bridge:

- 200 stdio functions deployed with pool.min 1: the seconds until every one has its warm
  container, the host memory each warm container costs (MemAvailable before and after,
  less the function processes' own RSS), the node's memory and its CPU while idle;
- 10,000 async calls on ten reuse-mode python functions, sent by hey: the rate they were
  queued at, the rate the node drained them at, and the memory Redis held for them.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import redis

from loadtests.bench import BenchHost, bench_host
from loadtests.gateway_calls import prepare
from loadtests.hey_calls import Processes, cpu_seconds, hey

FUNCTIONS = 200
QUEUED = 10_000
QUEUES = 10


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _container_processes(node: int) -> list[psutil.Process]:
    """The processes of the node's containers and their monitors: everything under it."""
    return list(psutil.Process(node).children(recursive=True))


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _warm(api: httpx.Client, names: list[str], timeout: float) -> float:
    started = time.monotonic()
    waiting = set(names)
    while waiting:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{len(waiting)} functions not warm after {timeout:.0f}s")
        listed = api.get("/system/functions").json()
        waiting -= {f["name"] for f in listed if f.get("availableReplicas", 0) >= 1}
        time.sleep(0.2)
    return time.monotonic() - started


def many_functions(host: BenchHost, api: httpx.Client) -> list[str]:
    procs = Processes.of(host)
    node = procs.node[0]
    before_avail, before_node = _mem_available(), psutil.Process(node).memory_info().rss
    before_children = _rss(_container_processes(node))
    names = [f"many{i:03d}" for i in range(FUNCTIONS)]
    started = time.monotonic()
    for name in names:
        api.post("/system/functions", json={"name": name, "image": "examples/busybox-wc",
                                            "protocol": "stdio",
                                            "pool": {"min": 1, "max": 2}}).raise_for_status()
    deployed = time.monotonic() - started
    warm = _warm(api, names, 900)
    time.sleep(5)  # settled: nothing still being made
    children = _container_processes(node)
    used = before_avail - _mem_available()
    child_rss = _rss(children) - before_children
    node_rss = psutil.Process(node).memory_info().rss - before_node
    cpu = cpu_seconds(procs.node)
    time.sleep(10)
    idle_cpu = (cpu_seconds(procs.node) - cpu) / 10
    for name in names:
        api.delete("/system/functions", params={"name": name})
    mib = 1 << 20
    return [
        f"### {FUNCTIONS} functions with pool.min 1 (stdio busybox wc)", "",
        "| figure | value |", "|---|---:|",
        f"| seconds to deploy all (the API answered) | {deployed:.1f} |",
        f"| seconds until every one had its warm container | {warm:.1f} |",
        f"| host memory per warm container (MemAvailable drop / {FUNCTIONS}) | "
        f"{used / FUNCTIONS / mib:.2f} MiB |",
        f"| of which RSS of the containers' processes and their monitors, per container | "
        f"{child_rss / FUNCTIONS / mib:.2f} MiB |",
        f"| the node's own RSS growth, per container | {node_rss / FUNCTIONS / 1024:.0f} KiB |",
        f"| processes under the node per container | {len(children) / FUNCTIONS:.1f} |",
        f"| node CPU while idle with {FUNCTIONS} pools | {idle_cpu * 100:.1f}% of a core |",
    ]  # fmt: skip


def long_queue(host: BenchHost, api: httpx.Client) -> list[str]:
    names = [f"queue{i}" for i in range(QUEUES)]
    for name in names:
        api.post("/system/functions", json={"name": name, "image": "examples/python-hello",
                                            "max_invocations": 0,
                                            "pool": {"min": 1, "max": 2}}).raise_for_status()
    _warm(api, names, 300)
    store = redis.Redis(unix_socket_path=str(host.base / "run" / "redis.sock"))
    try:
        before = int(store.info("memory")["used_memory"])
        listed = api.get("/system/functions").json()
        counts = {f["name"]: f.get("invocationCount", 0) for f in listed}
        start = sum(counts.get(n, 0) for n in names)
        auth = {"Authorization": f"Bearer {host.token}"}
        started = time.monotonic()
        sent = 0
        for name in names:
            answered, _, _ = hey(f"{host.url}/async-function/{name}", QUEUED // QUEUES, 32,
                                 auth, ok="202")  # fmt: skip
            sent += len(answered)
        queued_in = time.monotonic() - started
        peak = int(store.info("memory")["used_memory"])
        while True:
            listed = api.get("/system/functions").json()
            done = sum(f.get("invocationCount", 0) for f in listed if f["name"] in names) - start
            if done >= sent or time.monotonic() - started > 1200:
                break
            peak = max(peak, int(store.info("memory")["used_memory"]))
            time.sleep(0.5)
        drained_in = time.monotonic() - started
    finally:
        store.close()
    return [
        f"### {QUEUED:,} async calls on {QUEUES} reuse-mode python functions", "",
        "| figure | value |", "|---|---:|",
        f"| accepted (202) | {sent} |",
        f"| queued at, calls/s (hey, 32 clients) | {sent / queued_in:.0f} |",
        f"| drained: all run within s | {drained_in:.1f} |",
        f"| drain rate, calls/s | {done / drained_in:.0f} |",
        f"| Redis memory for the queue at its peak | {(peak - before) / (1 << 20):.1f} MiB "
        f"({(peak - before) / max(1, sent):.0f} bytes a call) |",
    ]  # fmt: skip


def run(runs: int, out: Path, stamp: str) -> str:
    with bench_host() as host:
        prepare(host)
        auth = {"Authorization": f"Bearer {host.token}"}
        with httpx.Client(base_url=host.url, headers=auth, timeout=120) as api:
            lines = ["## Scale on one node", "", *many_functions(host, api), "",
                     *long_queue(host, api)]  # fmt: skip
    return "\n".join(lines) + "\n"
