"""Calls through the client contract, Redis and a pool manager, on real containers.

- fresh-container calls (max_invocations 1): stdio busybox ``wc`` and, with the
  python image built, the python hello over http: latency percentiles;
- reuse mode (max_invocations 0): the python hello, calls per second;
- pool refill: warm containers made per second, beside bare parallel ``runc run``
  of an equivalent bundle with the same parallelism.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path

import redis.asyncio as aioredis

from gateway.redisd import RedisServer
from images.base import bootstrap
from images.builder import Builder, BuildOptions
from images.store import ImageStore
from loadtests.bench import MS, REPO, pct, verdict
from pool.contract.client import PoolClient
from pool.contract.keys import new_call_id
from pool.contract.messages import CallRequest
from pool.contract.specs import parse_spec
from pool.manager import PoolManager
from runtime.engine import Runtime, RuntimeConfig
from runtime.oci import make_config
from runtime.spec import ImageConfig, RunOptions
from runtime.users import User


async def profiled(work: Callable[[], Awaitable[object]], top: int = 15) -> list[str]:
    """cProfile of ``work`` (everything this event loop does meanwhile): the functions
    with the most own time, as a table."""
    profile = cProfile.Profile()
    profile.enable()
    started = time.perf_counter()
    try:
        await work()
    finally:
        profile.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    out = [f"Wall time {wall * MS:.0f} ms.", "",
           "| function | calls | own ms | with callees ms |", "|---|---:|---:|---:|"]  # fmt: skip
    for (path, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(path).name}:{line}" if line else path
        out.append(f"| `{name}` ({where}) | {calls} | {own * MS:.0f} | {cumulative * MS:.0f} |")
    return out


async def timed_calls(
    client: PoolClient, fn: str, count: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = asyncio.Queue[int]()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            now = time.time()
            req = CallRequest(new_call_id(fn), fn, deadline=now + 30, body=f"x{i}".encode(),
                              enqueued=now, reply_to=client.reply_stream)  # fmt: skip
            t = time.perf_counter()
            result = await client.call(req)
            latencies.append(time.perf_counter() - t)
            if result.status != 200:
                raise RuntimeError(f"{fn}: {result.status} {result.message}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not get warm")
        await asyncio.sleep(0.005)


def bare_parallel(base: Path, layer: Path, count: int, parallel: int) -> float:
    bundle = base / "bare"
    bundle.mkdir()
    config = make_config(
        ImageConfig(cmd=("true",)), RunOptions(read_only=True), user=User(0, 0, (), "/"),
        hostname="bare", rootfs=layer, cgroups_path="/scow-bench/x", extra_mounts=[],
        netns_path=None, init_binary=shutil.which("tini-static"), nofile_hard=1024,
    )  # fmt: skip

    def one(i: int) -> None:
        d = base / f"b{i}"
        d.mkdir()
        cfg = dict(config, linux={**config["linux"], "cgroupsPath": f"/scow-bench/b{i}"})
        (d / "config.json").write_text(json.dumps(cfg))
        subprocess.run(["runc", "--root", str(base / "root"), "run", "--bundle", str(d), f"b{i}"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    for d in Path("/sys/fs/cgroup").glob("*/scow-bench"):
        d.rmdir()
    return count / elapsed


async def measure(runs: int, with_python: bool) -> list[str]:
    base = Path(tempfile.mkdtemp(prefix="scow-poolbench-"))
    server = RedisServer(base / "redis.sock", base / "redis", persist=False)
    server.start()
    redis = aioredis.Redis.from_url(server.url)
    rt = Runtime(RuntimeConfig(state_dir=base / "state", run_dir=base / "run",
                               cgroup_parent="scow-bench-pool", bridge="scowbench0",
                               subnet=IPv4Network("10.215.0.0/24")))  # fmt: skip
    store = ImageStore(base / "images")
    store.open()
    lines: list[str] = []
    manager = PoolManager(redis, rt, store, sync_every=0.05)
    client = PoolClient(redis)
    try:
        busybox = bootstrap(store, "busybox")
        await rt.open()
        builder = Builder(store, rt, progress=lambda line: None)
        await builder.build(BuildOptions(REPO / "images/examples/busybox-wc", tag="bench/wc"))
        if with_python:
            await builder.build(BuildOptions(REPO / "images/runtimes/python", tag="scow/python"))
            await builder.build(
                BuildOptions(REPO / "images/examples/python-hello", tag="bench/hello")
            )
        await manager.start()
        await client.start()

        async def deploy(**fields: object) -> None:
            spec = parse_spec(fields)
            await client.deploy(spec)
            await manager.sync_functions()
            pool = manager.workers[spec.name].pool
            await until(lambda: len(pool.ready) >= spec.pool_min)

        lines += ["## Calls through the pool (client contract, Redis, pool manager)", "",
                  "| scenario | calls | concurrency | p50 ms | p90 ms | p99 ms | calls/s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip

        def row(name: str, lat: list[float], conc: int, elapsed: float) -> None:
            cells = [f"{pct(lat, q) * MS:.1f}" for q in (0.5, 0.9, 0.99)]
            rate = f"{len(lat) / elapsed:.0f}"
            lines.append(f"| {name} | {len(lat)} | {conc} | {' | '.join(cells)} | {rate} |")

        await deploy(name="wc", image="bench/wc", protocol="stdio", pool={"min": 4, "max": 16})
        for conc in (1, 4):
            lat, elapsed = await timed_calls(client, "wc", runs * 4, conc)
            row("stdio busybox wc, fresh container", lat, conc, elapsed)
        profile = await profiled(lambda: timed_calls(client, "wc", runs * 4, 1))
        if with_python:
            await deploy(name="hello", image="bench/hello", pool={"min": 4, "max": 16})
            for conc in (1, 4):
                lat, elapsed = await timed_calls(client, "hello", runs * 2, conc)
                row("python hello (http), fresh container", lat, conc, elapsed)
            await deploy(name="reuse", image="bench/hello", max_invocations=0,
                         pool={"min": 2, "max": 4})  # fmt: skip
            for conc in (1, 8):
                lat, elapsed = await timed_calls(client, "reuse", runs * 10, conc)
                row("python hello (http), reuse mode", lat, conc, elapsed)

        # Refill: how fast a pool of stdio containers fills, beside bare runc run.
        count = 40
        started = time.perf_counter()
        await deploy(name="refill", image="bench/wc", protocol="stdio",
                     pool={"min": count, "max": count})  # fmt: skip
        scow_rate = count / (time.perf_counter() - started)
        slots = max(2, (os.cpu_count() or 1) * 2)
        bare_rate = bare_parallel(base, store.layer_dirs(busybox)[0], count, slots)
        lines += ["", f"## Pool refill: {count} containers, {slots} at a time", "",
                  "| what | containers/s | vs bare |", "|---|---:|---:|",
                  f"| scow warm pool (stdio: rootfs, config, runc create) | {scow_rate:.0f} |"
                  f" {scow_rate / bare_rate:.2f}x |",
                  f"| bare parallel runc run (create, start, exit, delete) | {bare_rate:.0f}"
                  " | 1.00x |", "",
                  f"Summary: the warm pool fills at {scow_rate:.0f} containers/s, "
                  f"{scow_rate / bare_rate:.2f}x bare parallel runc (goal 60/s: "
                  f"{verdict(scow_rate >= 60)})."]  # fmt: skip
        lines += ["", f"## Profile: {runs * 4} fresh stdio calls, one at a time", "",
                  "The client, Redis round trips and the pool manager share this process, so "
                  "this is the Python side of a call: where its CPU goes, by own time. Time in "
                  "runc and the kernel shows as waiting (select/epoll).", "", *profile]  # fmt: skip
        return lines
    finally:
        await client.close()
        await manager.stop()
        await rt.reap()
        await asyncio.to_thread(rt.network.remove_bridge)
        await redis.aclose()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def run(runs: int, out: Path, stamp: str, with_python: bool = False) -> str:
    """Without the python image: the gateway scenarios cover it (and build it once)."""
    return "\n".join(asyncio.run(measure(runs, with_python))) + "\n"
