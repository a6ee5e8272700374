"""Calls end to end through the gateway (HTTP on TCP with the token), Redis and a node.

On a `scow up` of its own, on the bench bridge:

- warm fresh-container calls (max_invocations 1): the stdio busybox wc and the
  python hello (http), at 1, 4 and 16 concurrent clients;
- reuse mode (max_invocations 0): the python hello at 1 to 64 clients;
- gateway and queue overhead: one warm reuse container called directly over the
  bridge, and the same through gateway, Redis and node;
- burst: 200 calls at once on a function with pool.min 2.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench import MS, REPO, BenchHost, bench_host, cdf, pct, plot, verdict
from runtime.records import ContainerStore


async def _calls(
    client: httpx.AsyncClient, fn: str, count: int, concurrency: int
) -> tuple[list[float], float, list[httpx.Response]]:
    latencies: list[float] = []
    responses: list[httpx.Response] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            response = await client.post(f"/function/{fn}", content=f"x{i}".encode())
            latencies.append(time.perf_counter() - t)
            responses.append(response)
            if response.status_code != 200:
                raise RuntimeError(f"{fn}: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, responses


async def _deploy(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    response = await client.post("/system/functions", json=spec)
    response.raise_for_status()
    want = spec.get("pool", {}).get("min", 1)
    for _ in range(600):
        info = (await client.get(f"/system/function/{spec['name']}")).json()
        if info["availableReplicas"] >= want:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{spec['name']} did not get warm")


def _row(name: str, lat: list[float], conc: int, elapsed: float) -> str:
    cells = " | ".join(f"{pct(lat, q) * MS:.1f}" for q in (0.5, 0.9, 0.99))
    return f"| {name} | {len(lat)} | {conc} | {cells} | {len(lat) / elapsed:.0f} |"


async def measure(host: BenchHost, runs: int, out: Path, stamp: str) -> list[str]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    auth = {"Authorization": f"Bearer {host.token}"}
    async with httpx.AsyncClient(base_url=host.url, limits=limits, timeout=120,
                                 headers=auth) as api:  # fmt: skip
        lines = ["## Calls through the gateway (HTTP, Redis, node), on `scow up`", "",
                 "| scenario | calls | clients | p50 ms | p90 ms | p99 ms | calls/s |",
                 "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        curves: dict[str, tuple[list[float], list[float]]] = {}
        p50_one: dict[str, float] = {}  # p50 ms at one client, by function
        one_client: dict[str, list[float]] = {}  # ms of each call at one client, by scenario

        async def level(fn: str, label: str, conc: int, count: int) -> float:
            """Calls per second at ``conc`` clients, after a warm-up that sizes the pool."""
            await _calls(api, fn, min(count, 4 * conc), conc)
            lat, elapsed, _ = await _calls(api, fn, count, conc)
            lines.append(_row(label, lat, conc, elapsed))
            xs, ys = curves.setdefault(label, ([], []))
            xs.append(conc)
            ys.append(pct(lat, 0.5) * MS)
            if conc == 1:
                p50_one[fn] = pct(lat, 0.5) * MS
                one_client[label] = [x * MS for x in lat]
            return len(lat) / elapsed

        await _deploy(api, {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio",
                            "pool": {"min": 4, "max": 16}})  # fmt: skip
        for conc in (1, 4, 16):
            await level("wc", "stdio busybox wc, fresh container", conc, runs * 4)
        await _deploy(api, {"name": "hello", "image": "examples/python-hello",
                            "pool": {"min": 4, "max": 16}})  # fmt: skip
        for conc in (1, 4, 16):
            await level("hello", "python hello (http), fresh container", conc, runs * 2)
        breakdown = await _breakdown(api, "hello", runs)
        await _deploy(api, {"name": "reuse", "image": "examples/python-hello",
                            "max_invocations": 0, "pool": {"min": 2, "max": 4}})  # fmt: skip
        rates: tuple[list[float], list[float]] = ([], [])
        for conc in (1, 2, 4, 8, 16, 32, 64):
            rate = await level("reuse", "python hello (http), reuse mode", conc, runs * 30)
            rates[0].append(conc)
            rates[1].append(rate)
        p50 = plot(
            out / f"{stamp}-calls-p50.png",
            "Call latency p50 by clients",
            "concurrent clients",
            "p50 ms",
            curves,
            log_y=True,
        )
        rate_plot = plot(
            out / f"{stamp}-reuse-rate.png",
            "Reuse mode: calls/s by clients",
            "concurrent clients",
            "calls/s",
            {"python hello, reuse": rates},
        )
        lines += ["", p50, rate_plot]
        fresh = max(p50_one["wc"], p50_one["hello"])
        lines += ["", f"Summary: a call on a fresh container, p50 at one client: busybox wc "
                  f"{p50_one['wc']:.1f} ms, python {p50_one['hello']:.1f} ms (goal 5 ms: "
                  f"{verdict(fresh <= 5)}). Reuse mode: p50 {p50_one['reuse']:.1f} ms (goal 2 ms: "
                  f"{verdict(p50_one['reuse'] <= 2)}), at most {max(rates[1]):.0f} calls/s "
                  f"(goal 2,000: {verdict(max(rates[1]) >= 2000)})."]  # fmt: skip
        overhead, overhead_p50, direct = await _overhead(api, host, runs)
        one_client["direct over the bridge (the function alone)"] = direct
        curves_cdf = cdf(out / f"{stamp}-calls-cdf.png", "Latency at one client, CDF", one_client)
        lines += ["", *breakdown, "", *overhead, "", curves_cdf, "",
                  f"Summary: the gateway and queue add {overhead_p50:.2f} ms at p50 "
                  f"(goal 1 ms: {verdict(overhead_p50 <= 1)}).", "",
                  *await _burst(api)]  # fmt: skip
        return lines


async def _breakdown(api: httpx.AsyncClient, fn: str, runs: int) -> list[str]:
    """Where a fresh call's time goes, from the call records (one client at a time)."""
    lat, _, responses = await _calls(api, fn, runs, 1)
    records = [(await api.get(f"/system/calls/{r.headers['x-call-id']}")).json()
               for r in responses]  # fmt: skip
    client = statistics.median(lat) * MS
    queue = statistics.median(r["queue_seconds"] for r in records) * MS
    run = statistics.median(r["run_seconds"] for r in records) * MS
    return [f"Where a fresh python call's time goes ({runs} calls, one client, medians):", "",
            "| part | ms |", "|---|---:|",
            f"| client sees | {client:.1f} |",
            f"| waiting in Redis until a node took it (queue) | {queue:.1f} |",
            f"| on the node: start the warm container, request, reply (run) | {run:.1f} |",
            f"| the rest: gateway, HTTP, reply stream | {client - queue - run:.1f} |"]  # fmt: skip


async def _overhead(
    api: httpx.AsyncClient, host: BenchHost, runs: int
) -> tuple[list[str], float, list[float]]:
    """One warm reuse container, called directly over the bridge and through the gateway."""
    await _deploy(api, {"name": "direct", "image": "examples/python-hello",
                        "max_invocations": 0, "pool": {"min": 1, "max": 1}})  # fmt: skip
    first = await api.post("/function/direct", content=b"x")
    record = (await api.get(f"/system/calls/{first.headers['x-call-id']}")).json()
    container = ContainerStore(host.state / "containers").load(record["container"])
    assert container is not None
    count = runs * 20
    async with httpx.AsyncClient(base_url=f"http://{container.ip}:8080", timeout=30) as direct:
        lat_direct = []
        for i in range(count):
            t = time.perf_counter()
            (await direct.post("/", content=f"x{i}".encode())).raise_for_status()
            lat_direct.append(time.perf_counter() - t)
    lat_gateway, _, _ = await _calls(api, "direct", count, 1)
    rows = []
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        d, g = pct(lat_direct, q) * MS, pct(lat_gateway, q) * MS
        rows.append(f"| {name} | {d:.2f} | {g:.2f} | {g - d:.2f} |")
    overhead_p50 = (pct(lat_gateway, 0.5) - pct(lat_direct, 0.5)) * MS
    return [f"Gateway and queue overhead: one warm container, {count} sequential calls each:",
            "", "| | direct over the bridge ms | through gateway, Redis, node ms | overhead ms |",
            "|---|---:|---:|---:|", *rows], overhead_p50, [x * MS for x in lat_direct]  # fmt: skip


async def _burst(api: httpx.AsyncClient) -> list[str]:
    await _deploy(api, {"name": "burst", "image": "examples/busybox-wc", "protocol": "stdio",
                        "pool": {"min": 2, "max": 16}})  # fmt: skip
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(api.post("/function/burst", content=b"x") for _ in range(200)), return_exceptions=True
    )
    drained = time.perf_counter() - started
    ok = [r for r in responses if isinstance(r, httpx.Response) and r.status_code == 200]
    cold = sum(1 for r in ok if r.headers.get("x-scow-cold") == "1")
    errors = len(responses) - len(ok)
    return ["Burst: 200 calls at once, stdio busybox wc, pool.min 2, pool.max 16:", "",
            "| drained in s | answered 200 | cold starts | errors |", "|---:|---:|---:|---:|",
            f"| {drained:.2f} | {len(ok)} | {cold} | {errors} |", "",
            f"Summary: 200 calls at once drained in {drained:.1f} s, {errors} errors "
            f"({cold} cold starts: the pool of 2 grew to its max of 16)."]  # fmt: skip


def prepare(host: BenchHost) -> None:
    """The images, built through the CLI as a user would (debian and python: a minute)."""
    host.scow("image", "bootstrap", "busybox")
    host.scow("build", "-q", "-t", "examples/busybox-wc", str(REPO / "images/examples/busybox-wc"))
    host.scow("build", "-q", "-t", "scow/python", str(REPO / "images/runtimes/python"))
    host.scow("build", "-q", "-t", "examples/python-hello",
              str(REPO / "images/examples/python-hello"))  # fmt: skip


def run(runs: int, out: Path, stamp: str) -> str:
    with bench_host() as host:
        prepare(host)
        return "\n".join(asyncio.run(measure(host, runs, out, stamp))) + "\n"
