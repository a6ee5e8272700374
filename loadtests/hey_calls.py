"""Calls under a real load generator: `hey` (Go) drives the gateway, so the client is
never the bottleneck the way a Python client was.

On a `scow up` of its own, on the bench bridge, for one gateway worker and then one per
core (``--gateway-workers``):

- reuse mode (max_invocations 0), the python hello: called directly over the bridge
  (the function alone), then through gateway, Redis and node, at 1, 16 and 64 clients;
- fresh containers (max_invocations 1): the python hello and the stdio busybox wc, one
  client after a warm-up (how many calls found their container made: ``X-Scow-Cold``
  is counted from a second pass by Python, which hey cannot count).

Beside each run: the CPU the node (with the runc and conmon processes it reaped) and the
gateway (with its workers) spent per call, from /proc, so where a call's cost goes is
measured, not guessed.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from loadtests.bench import MS, BenchHost, bench_host, pct, verdict
from loadtests.gateway_calls import prepare
from runtime.records import ContainerStore

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    latencies: list[float]  # seconds, the answered ones
    seconds: float
    errors: int
    node_cpu: float  # seconds of CPU over the run
    gateway_cpu: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def cpu_ms_per_call(self, seconds: float) -> float:
        return seconds / max(1, len(self.latencies)) * MS


def hey(
    url: str, count: int, clients: int, headers: dict[str, str], ok: str = "200"
) -> tuple[list[float], int, float]:
    """``count`` POSTs at ``clients`` concurrency (hey sends ``count // clients`` on each
    client): the latencies of the answers with status ``ok``, the number of other answers
    and of requests that got none, the seconds from the first request to the last answer."""
    argv = ["hey", "-n", str(count), "-c", str(clients), "-m", "POST", "-d", "x", "-o", "csv",
            "-t", "60"]  # fmt: skip
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=900, check=True)
    latencies, errors, end = [], 0, 0.0
    for row in csv.DictReader(io.StringIO(done.stdout)):
        took, offset = float(row["response-time"]), float(row["offset"])
        end = max(end, offset + took)
        if row["status-code"] == ok:
            latencies.append(took)
        else:
            errors += 1
    sent = count // clients * clients
    errors = sent - len(latencies)  # other statuses, and requests hey got no answer to
    return latencies, errors, end


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        # Its reaped children too: runc, conmon and the rest a container costs the node.
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass(frozen=True)
class Processes:
    node: list[int]
    gateway: list[int]

    @classmethod
    def of(cls, host: BenchHost) -> Processes:
        node, gateway = [], []
        for child in psutil.Process(host.process.pid).children():
            cmd = " ".join(child.cmdline())
            if "-m pool" in cmd:
                node.append(child.pid)
            elif "gateway.cli gateway" in cmd:
                gateway += [child.pid, *(c.pid for c in child.children())]
        return cls(node, gateway)


@contextmanager
def measured(procs: Processes) -> Iterator[dict[str, float]]:
    spent: dict[str, float] = {}
    node, gateway = cpu_seconds(procs.node), cpu_seconds(procs.gateway)
    yield spent
    spent["node"] = cpu_seconds(procs.node) - node
    spent["gateway"] = cpu_seconds(procs.gateway) - gateway


def load(host: BenchHost, url: str, count: int, clients: int, auth: bool = True) -> Run:
    procs = Processes.of(host)
    headers = {"Authorization": f"Bearer {host.token}"} if auth else {}
    hey(url, min(count, 8 * clients), clients, headers)  # warm-up: pools sized, connections
    with measured(procs) as spent:
        latencies, errors, seconds = hey(url, count, clients, headers)
    return Run(latencies, seconds, errors, spent["node"], spent["gateway"])


def _deploy(api: httpx.Client, spec: dict[str, object]) -> None:
    api.post("/system/functions", json=spec).raise_for_status()
    want = spec.get("pool", {}).get("min", 1)  # type: ignore[attr-defined]
    for _ in range(1200):
        if api.get(f"/system/function/{spec['name']}").json()["availableReplicas"] >= want:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{spec['name']} did not get warm")


def _cold_share(api: httpx.Client, fn: str, count: int) -> int:
    """Calls, one after another, that found no ready container (after hey's warm-up)."""
    cold = 0
    for i in range(count):
        answer = api.post(f"/function/{fn}", content=f"x{i}".encode())
        answer.raise_for_status()
        cold += answer.headers.get("x-scow-cold") == "1"
    return cold


def _paced(api: httpx.Client, fn: str, count: int, rate: float) -> tuple[list[float], int]:
    """``count`` calls one after another at ``rate`` a second at most (an open loop, as
    calls arrive in life): their latencies, and how many found no ready container. A
    Python client: it must read X-Scow-Cold, and at these rates it is never the bound."""
    latencies, cold = [], 0
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        answer = api.post(f"/function/{fn}", content=f"x{i}".encode())
        latencies.append(time.perf_counter() - t)
        answer.raise_for_status()
        cold += answer.headers.get("x-scow-cold") == "1"
    return latencies, cold


PACED = (("fresh", "fresh python hello (http)", 5.0), ("wc", "fresh stdio busybox wc", 10.0))


HEADER = ["| scenario | workers | clients | calls | errors | p50 ms | p90 ms | p99 ms | calls/s "
          "| node CPU ms/call | gateway CPU ms/call |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip


def _row(name: str, workers: int, clients: int, run: Run) -> str:
    cells = " | ".join(f"{pct(run.latencies, q) * MS:.2f}" for q in (0.5, 0.9, 0.99))
    return (f"| {name} | {workers} | {clients} | {len(run.latencies)} | {run.errors} | {cells} "
            f"| {run.rate:.0f} | {run.cpu_ms_per_call(run.node_cpu):.2f} "
            f"| {run.cpu_ms_per_call(run.gateway_cpu):.2f} |")  # fmt: skip


def measure_host(host: BenchHost, workers: int, runs: int) -> tuple[list[str], dict[str, float]]:
    rows: list[str] = []
    figures: dict[str, float] = {}
    auth = {"Authorization": f"Bearer {host.token}"}
    with httpx.Client(base_url=host.url, headers=auth, timeout=120) as api:
        _deploy(api, {"name": "reuse", "image": "examples/python-hello", "max_invocations": 0,
                      "pool": {"min": 2, "max": 4}})  # fmt: skip
        first = api.post("/function/reuse", content=b"x")
        record = api.get(f"/system/calls/{first.headers['x-call-id']}").json()
        container = ContainerStore(host.state / "containers").load(record["container"])
        assert container is not None
        direct = load(host, f"http://{container.ip}:8080/", runs * 100, 1, auth=False)
        rows.append(_row("reuse, direct over the bridge (the function alone)", workers, 1, direct))
        figures["direct p50"] = pct(direct.latencies, 0.5) * MS
        for clients in (1, 16, 64):
            run = load(host, f"{host.url}/function/reuse", runs * 100, clients)
            rows.append(_row("reuse, through gateway, Redis, node", workers, clients, run))
            figures[f"reuse p50 c{clients}"] = pct(run.latencies, 0.5) * MS
            figures[f"reuse rate c{clients}"] = run.rate
            figures[f"reuse node cpu c{clients}"] = run.cpu_ms_per_call(run.node_cpu)
            figures[f"reuse gateway cpu c{clients}"] = run.cpu_ms_per_call(run.gateway_cpu)
        for name, spec in (
            ("fresh", {"image": "examples/python-hello", "pool": {"min": 2, "max": 16}}),
            ("wc", {"image": "examples/busybox-wc", "protocol": "stdio",
                    "pool": {"min": 2, "max": 16}}),
        ):  # fmt: skip
            _deploy(api, {"name": name, **spec})
            for clients in (1, 4):
                run = load(host, f"{host.url}/function/{name}", runs * 4, clients)
                label = "fresh python hello (http)" if name == "fresh" else "fresh stdio busybox wc"
                rows.append(_row(label, workers, clients, run))
                figures[f"{name} p50 c{clients}"] = pct(run.latencies, 0.5) * MS
                figures[f"{name} rate c{clients}"] = run.rate
                figures[f"{name} node cpu c{clients}"] = run.cpu_ms_per_call(run.node_cpu)
            figures[f"{name} cold of {runs * 2}"] = _cold_share(api, name, runs * 2)
        if workers == 1:
            for name, _, rate in PACED:
                _paced(api, name, 10, rate)  # the pool sized for this rate
                lat, cold = _paced(api, name, runs * 4, rate)
                figures[f"{name} paced p50"] = pct(lat, 0.5) * MS
                figures[f"{name} paced p99"] = pct(lat, 0.99) * MS
                figures[f"{name} paced cold"] = cold
                figures[f"{name} paced calls"] = len(lat)
                figures[f"{name} paced rate"] = rate
    return rows, figures


def run(runs: int, out: Path, stamp: str) -> str:
    if not shutil.which("hey"):
        raise SystemExit("hey is not installed: ./dev loadtest installs it")
    cores = os.cpu_count() or 1
    rows = list(HEADER)
    by_workers: dict[int, dict[str, float]] = {}
    for workers in sorted({1, cores}):
        with bench_host("--gateway-workers", str(workers)) as host:
            prepare(host)
            found, by_workers[workers] = measure_host(host, workers, runs)
            rows += found
    one, most = by_workers[1], by_workers[max(by_workers)]
    overhead = one["reuse p50 c1"] - one["direct p50"]
    best = max(f[f"reuse rate c{c}"] for f in by_workers.values() for c in (1, 16, 64))
    lines = ["## Calls under hey (a Go load generator), on `scow up`", "", *rows, "",
             f"Summary: the gateway, Redis and node add {overhead:.2f} ms at p50 to a reuse "
             f"call (goal 1 ms: {verdict(overhead <= 1)}); reuse mode p50 at one client "
             f"{one['reuse p50 c1']:.2f} ms (goal 2 ms: {verdict(one['reuse p50 c1'] <= 2)}); "
             f"at most {best:.0f} calls/s (goal 2,000: {verdict(best >= 2000)}), "
             f"{most['reuse rate c64']:.0f} calls/s at 64 clients with {max(by_workers)} "
             f"gateway workers against {one['reuse rate c64']:.0f} with one "
             f"(ratio {most['reuse rate c64'] / one['reuse rate c64']:.2f}). Node CPU per reuse "
             f"call at 16 clients: {one['reuse node cpu c16']:.2f} ms, gateway CPU "
             f"{one['reuse gateway cpu c16']:.2f} ms. A fresh python call at one client: p50 "
             f"{one['fresh p50 c1']:.1f} ms, {one[f'fresh cold of {runs * 2}']:.0f} of "
             f"{runs * 2} calls in a row cold; stdio wc p50 {one['wc p50 c1']:.1f} ms "
             f"(goal 5 ms: {verdict(max(one['fresh p50 c1'], one['wc p50 c1']) <= 5)}); "
             f"the fresh python call's ratio to a reuse call: "
             f"{one['fresh p50 c1'] / one['reuse p50 c1']:.1f}x."]  # fmt: skip
    lines += ["", "Fresh containers at a steady arrival rate (one client, an open loop: a call "
              "leaves at its time whether the last one was quick or not; hey's closed loop "
              "above sends the next call at once, so it measures how fast containers are made, "
              "not what a call waits at a rate the pool is sized for):", "",
              "| scenario | calls/s offered | calls | cold | p50 ms | p99 ms | p50 vs reuse p50 |",
              "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, label, _ in PACED:
        p50 = one[f"{name} paced p50"]
        lines.append(f"| {label} | {one[f'{name} paced rate']:.0f} | "
                     f"{one[f'{name} paced calls']:.0f} | {one[f'{name} paced cold']:.0f} | "
                     f"{p50:.1f} | {one[f'{name} paced p99']:.1f} | "
                     f"{p50 / one['reuse p50 c1']:.1f}x |")  # fmt: skip
    cold = one["fresh paced cold"] / one["fresh paced calls"]
    ratio = one["fresh paced p50"] / one["reuse p50 c1"]
    tail = one["fresh paced p99"] / one["fresh paced p50"]
    lines += ["", f"Summary: paced fresh python calls: {cold:.0%} cold (goal 1%: "
              f"{verdict(cold <= 0.01)}), p50 {ratio:.1f}x the reuse p50 (goal 1.3x: "
              f"{verdict(ratio <= 1.3)}), p99 {tail:.1f}x their p50 (goal 3x: "
              f"{verdict(tail <= 3)}); stdio wc p50 {one['wc paced p50']:.1f} ms (goal 10 ms: "
              f"{verdict(one['wc paced p50'] <= 10)})."]  # fmt: skip
    return "\n".join(lines) + "\n"
