"""Faults under load, with every daemon a real process: pool managers killed -9 and
restarted, a gateway killed -9, Redis stopped, a node sent SIGTERM, and a soak.

Each test counts what clients saw and records the figures (tests/figures.py);
docs/reliability.md is the report made from them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.redisd import RedisServer
from pool.contract import keys
from pool.contract.client import PoolClient
from pool.contract.keys import new_call_id
from pool.contract.messages import CallRequest
from pool.contract.specs import parse_spec
from tests.processes import GatewayProcess, Node, open_fds, rss_mib

pytestmark = pytest.mark.slow

Figures = Callable[[str, object], None]

STEADY = {"name": "steady", "image": "busybox", "protocol": "stdio",
          "command": "sleep 0.2; cat", "timeout": "8s", "pool": {"min": 2, "max": 6}}  # fmt: skip
GRACE = 1.5  # the gateway's own 504 comes one second after the deadline; scheduling slack


@dataclass(frozen=True)
class Outcome:
    sent: bytes
    status: int  # 0: no HTTP answer (a connection error)
    body: bytes
    call_id: str
    seconds: float
    error: str

    @property
    def answered(self) -> bool:
        """A result, or a 502/504/503 that says why, before the deadline (and its grace)."""
        if self.status == 200:
            return self.body == self.sent
        return self.status in (502, 503, 504) and bool(self.error) and self.seconds < 8 + GRACE


async def deploy(gateway: GatewayProcess, spec: dict[str, object]) -> None:
    async with gateway.admin() as admin:
        response = await admin.post("/system/functions", json=spec)
        assert response.status_code == 201, response.text
        # Warm: one call through, so that load starts on a ready pool.
        first = await admin.post(f"/function/{spec['name']}", content=b"warm")
        assert first.status_code == 200, first.text


async def call(http: httpx.AsyncClient, fn: str, body: bytes, **headers: str) -> Outcome:
    started = time.monotonic()
    try:
        r = await http.post(f"/function/{fn}", content=body, headers=headers)
    except httpx.TransportError as exc:
        return Outcome(body, 0, b"", "", time.monotonic() - started, repr(exc))
    error = ""
    if r.status_code != 200:
        try:
            error = r.json().get("error", "")
        except ValueError:
            error = ""
    return Outcome(body, r.status_code, r.content, r.headers.get("x-call-id", ""),
                   time.monotonic() - started, error)  # fmt: skip


class Load:
    """``clients`` loops of sync calls to ``fn`` until stopped; every outcome kept."""

    def __init__(self, url: str, fn: str, clients: int) -> None:
        self.url, self.fn, self.clients = url, fn, clients
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _client(self, i: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                self.outcomes.append(await call(http, self.fn, f"{i}-{n}".encode()))
                n += 1

    def __enter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    async def finish(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


async def registered(redis: aioredis.Redis, node: Node, timeout: float = 30) -> None:
    """Until this process of ``node`` has started (reaped, then sent its first heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = await redis.hget(keys.NODES, node.node_id)
        if raw and json.loads(raw)["pid"] == node.pid:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node {node.node_id} did not start: {node.log_tail()}")


def leftovers(node: Node, ids: set[str]) -> set[str]:
    """Which of ``ids`` still has a record, a cgroup or a mount on the host."""
    rt = node.runtime()
    found = (set(rt.store.ids()) | rt.cgroups.ids()) & ids
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    return found | {cid for cid in ids if cid in mounts}


async def attempts(redis: aioredis.Redis, call_ids: list[str]) -> Counter[int]:
    """How many calls ran 0, 1, 2... times (the record's runs-started counter)."""
    async with redis.pipeline(transaction=False) as pipe:
        for call_id in call_ids:
            pipe.hget(keys.record_key(call_id), "attempts")
        return Counter(int(v or 0) for v in await pipe.execute())


def failures(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.status} {o.error} {o.seconds:.2f}s" for o in outcomes if not o.answered][:10]


async def test_pool_manager_killed_20_times_under_steady_load(
    nodes: Callable[..., Node], gateways: Callable[..., GatewayProcess],
    redis_client: aioredis.Redis, figures: Figures,
) -> None:  # fmt: skip
    node, gateway = nodes(), gateways()
    node.start()
    gateway.start()
    await registered(redis_client, node)
    await deploy(gateway, STEADY)
    leaked: dict[int, set[str]] = {}
    started = time.monotonic()
    with Load(gateway.url, "steady", clients=6) as load:
        for kill in range(20):
            await asyncio.sleep(0.6)  # calls get taken and run
            before = set(node.runtime().store.ids())
            node.kill()
            node.start()
            await registered(redis_client, node)
            if left := leftovers(node, before):
                leaked[kill] = left
        await asyncio.sleep(3)  # the last restart serves calls again
        outcomes = await load.finish()
    ids = [o.call_id for o in outcomes if o.call_id]
    runs = await attempts(redis_client, ids)
    lost = [o for o in outcomes if not o.answered]
    figures("calls attempted", len(outcomes))
    figures("answered 200", sum(o.status == 200 for o in outcomes))
    figures("answered 502/504 with a reason", sum(o.status in (502, 504) for o in outcomes))
    figures("lost", len(lost))
    figures("ran twice or more (redelivered after a kill)",
            sum(n for k, n in runs.items() if k > 1))
    figures("slowest answer s", round(max(o.seconds for o in outcomes), 2))
    figures("duration s", round(time.monotonic() - started, 1))
    figures("restarts that left a container of the killed process", len(leaked))
    assert not lost, failures(outcomes)
    assert not leaked, leaked
    assert sum(o.status == 200 for o in outcomes) > len(outcomes) // 2
    assert node.stop() == 0
    rt = node.runtime()
    assert rt.store.all() == [] and rt.cgroups.ids() == set()


async def test_gateway_killed_mid_load_and_retries_with_idempotency_keys(
    nodes: Callable[..., Node], gateways: Callable[..., GatewayProcess],
    redis_client: aioredis.Redis, figures: Figures,
) -> None:  # fmt: skip
    node, gateway = nodes(), gateways()
    node.start()
    gateway.start()
    await registered(redis_client, node)
    slow = {**STEADY, "name": "slow", "command": "sleep 1; cat", "pool": {"min": 4, "max": 8}}
    await deploy(gateway, slow)
    count = 40

    async def first_try(i: int, http: httpx.AsyncClient) -> Outcome:
        await asyncio.sleep(i * 0.05)  # spread: some done, some in flight, some not yet sent
        return await call(http, "slow", f"call {i}".encode(), **{"Idempotency-Key": f"key-{i}"})

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        tries = asyncio.gather(*(first_try(i, http) for i in range(count)))
        await asyncio.sleep(1.2)
        gateway.kill()
        first = await tries
    gateway.start()  # the same port: clients come back to the same address

    async def retry(i: int, http: httpx.AsyncClient) -> Outcome:
        for _ in range(20):
            outcome = await call(http, "slow", f"call {i}".encode(),
                                 **{"Idempotency-Key": f"key-{i}"})  # fmt: skip
            if outcome.status != 0:
                return outcome
            await asyncio.sleep(0.2)
        return outcome

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        second = await asyncio.gather(*(retry(i, http) for i in range(count)))
    refused = [o for o in first if o.status == 0]
    figures("calls", count)
    figures("answered before the kill", sum(o.status == 200 for o in first))
    in_flight = [o for o in refused if not o.error.startswith("ConnectError")]
    figures("in flight at the kill: connection dropped", len(in_flight))
    figures("sent while no gateway listened: refused", len(refused) - len(in_flight))
    figures("other errors at the kill", sum(o.status not in (0, 200) for o in first))
    # Only connection errors, and only for the requests the killed gateway held.
    assert all(o.status in (0, 200) for o in first), [o.status for o in first]
    assert in_flight, "the kill hit no request in flight"
    assert all(o.status == 200 and o.body == o.sent for o in second), failures(second)
    for before, after in zip(first, second, strict=True):
        if before.status == 200:
            assert after.call_id == before.call_id and after.body == before.body
    ids = [o.call_id for o in second]
    assert len(set(ids)) == count
    runs = await attempts(redis_client, ids)
    figures("calls that ran exactly once", runs[1])
    assert runs == Counter({1: count}), runs
    # Each key queued exactly one call: the function's index holds one id per key.
    indexed = await redis_client.lrange(keys.calls_index_key("slow"), 0, -1)
    assert sorted(i.decode() for i in indexed if i.decode() in set(ids)) == sorted(ids)
    assert len(indexed) == count + 1  # and the warm-up call


async def test_redis_stopped_under_load_503_then_recovers(
    nodes: Callable[..., Node], gateways: Callable[..., GatewayProcess],
    scow_dirs: tuple[Path, Path], figures: Figures,
) -> None:  # fmt: skip
    base = scow_dirs[0].parent / "redis"
    server = RedisServer(base / "redis.sock", base / "data", persist=True)
    server.start()
    assert server.process is not None
    node, gateway = nodes(server.url), gateways(server.url)
    try:
        node.start()
        gateway.start()
        await deploy(gateway, STEADY)
        with Load(gateway.url, "steady", clients=4) as load:
            await asyncio.sleep(2)
            server.stop()  # SIGTERM: redis saves and exits
            down = time.monotonic()
            # Calls already waiting wait for their deadline (Redis may be back by then);
            # new ones are told at once. A probe sends them for the 3 s Redis is away.
            while_gone = []
            recovered = None
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                while time.monotonic() - down < 3:
                    while_gone.append(await call(http, "steady", b"probe"))
                    await asyncio.sleep(0.1)
                server.start()
                back = time.monotonic()
                probes: list[Outcome] = []
                while time.monotonic() - back < 30:  # nothing restarted: both find it again
                    probes.append(await call(http, "steady", b"probe"))
                    if probes[-1].status == 200:
                        recovered = time.monotonic() - back
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(2)
            outcomes = await load.finish()
        figures("calls sent while Redis was down", len(while_gone))
        figures("503 while down", sum(o.status == 503 for o in while_gone))
        figures("slowest 503 s", round(max(o.seconds for o in while_gone), 3))
        figures("answers under load, by status", dict(Counter(o.status for o in outcomes)))
        figures("seconds from Redis back to a 200", None if recovered is None
                else round(recovered, 2))  # fmt: skip
        figures("down for s", round(back - down, 2))
        # The probes' record states tell which side stalled, should one: "queued", the
        # node took nothing; "done", the replies were lost on their way back.
        redis = aioredis.Redis.from_url(server.url)
        states = [await redis.hget(keys.record_key(p.call_id), "state") for p in probes]
        await redis.aclose()
        assert recovered is not None, (
            f"no 200 within 30 s of Redis returning: {failures(probes)}, record states "
            f"{states}\nnode: {node.log_tail()}\ngateway: {gateway.log_tail()}"
        )
        assert while_gone and all(o.status == 503 for o in while_gone), failures(while_gone)
        # Nothing but results, 503 (Redis away) and 504 (a call Redis's absence held up).
        assert {o.status for o in outcomes} <= {200, 503, 504}, Counter(o.status for o in outcomes)
        for o in outcomes:
            if o.status == 503:
                assert o.error == "redis_unavailable" and o.seconds < 12, o
        # Both daemons rode it out: the same processes, still running.
        assert node.proc is not None and node.proc.poll() is None
        assert gateway.proc is not None and gateway.proc.poll() is None
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it to exit by it.
        assert gateway.stop() in (0, -15) and node.stop() == 0
        # Redis away is said once per outage, not once per try, and no task dies of it.
        assert "never retrieved" not in node.log_tail(100_000), node.log_tail()
    finally:
        try:
            node.stop_if_running()  # before Redis: a node holding results waits for it
            gateway.stop_if_running()
        finally:
            server.stop()


async def test_a_result_made_while_redis_is_away_is_sent_once_it_is_back(
    nodes: Callable[..., Node], scow_dirs: tuple[Path, Path], figures: Figures,
) -> None:  # fmt: skip
    base = scow_dirs[0].parent / "redis"
    server = RedisServer(base / "redis.sock", base / "data", persist=True)
    server.start()
    redis = aioredis.Redis.from_url(server.url)
    client = PoolClient(redis)
    node = nodes(server.url)
    try:
        node.start()
        await registered(redis, node)
        await client.start()
        spec = {**STEADY, "name": "held", "command": "sleep 1.5; cat", "timeout": "20s",
                "pool": {"min": 1, "max": 2}}  # fmt: skip
        await client.deploy(parse_spec(spec))
        now = time.time()
        req = CallRequest(new_call_id("held"), "held", deadline=now + 20, body=b"kept",
                          enqueued=now, reply_to=client.reply_stream)  # fmt: skip
        answer = asyncio.create_task(client.call(req, grace=2.0))
        while await redis.hget(keys.record_key(req.id), "state") != b"running":
            assert not answer.done(), answer.result()
            await asyncio.sleep(0.02)
        server.stop()  # while the function runs: its result is made with Redis away
        down = time.monotonic()
        await asyncio.sleep(3)
        server.start()
        result = await answer
        figures("seconds from Redis back to the held result", round(time.monotonic() - down - 3, 2))
        assert (result.status, result.body) == (200, b"kept"), result
        # Sent when Redis came back, not run again by a take-over of the unanswered call.
        assert await redis.hget(keys.record_key(req.id), "attempts") == b"1"
        assert "never retrieved" not in node.log_tail(100_000), node.log_tail()
        assert node.stop() == 0
    finally:
        try:
            node.stop_if_running()
            await client.close()
            await redis.aclose()
        finally:
            server.stop()


async def test_sigterm_finishes_calls_in_flight_and_claims_no_more(
    nodes: Callable[..., Node], gateways: Callable[..., GatewayProcess],
    redis_client: aioredis.Redis, figures: Figures,
) -> None:  # fmt: skip
    node, gateway = nodes(), gateways()
    node.start()
    gateway.start()
    await registered(redis_client, node)
    spec = {**STEADY, "name": "drain", "command": "sleep 2; cat", "timeout": "10s",
            "pool": {"min": 4, "max": 4}}  # fmt: skip
    await deploy(gateway, spec)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        in_flight = asyncio.gather(*(call(http, "drain", f"{i}".encode()) for i in range(4)))
        while (await redis_client.xpending(keys.calls_key("drain"), keys.GROUP))[
            "pending"
        ] < 4:
            await asyncio.sleep(0.02)
        deadline = time.time() + 10
        term = time.monotonic()
        assert node.proc is not None
        node.proc.send_signal(15)
        await asyncio.sleep(0.2)
        later = [asyncio.create_task(call(http, "drain", b"later")) for _ in range(3)]
        finished = await in_flight
        code = await asyncio.to_thread(node.proc.wait, 30)
        exited = time.monotonic() - term
        assert all(o.status == 200 and o.body == o.sent for o in finished), failures(finished)
        assert code == 0
        assert time.time() < deadline, "exited after the longest remaining deadline"
        rt = node.runtime()
        assert rt.store.all() == [] and rt.cgroups.ids() == set(), "containers left"
        # The later calls wait in the queue, claimed by no one...
        info = await redis_client.xpending(keys.calls_key("drain"), keys.GROUP)
        assert info["pending"] == 0
        assert await redis_client.xlen(keys.calls_key("drain")) == 3
        # ...until a node takes them.
        node.start()
        served = await asyncio.gather(*later)
    figures("calls in flight at SIGTERM, finished", sum(o.status == 200 for o in finished))
    figures("seconds from SIGTERM to exit", round(exited, 2))
    figures("calls sent after SIGTERM and served by the next node",
            sum(o.status == 200 for o in served))  # fmt: skip
    assert all(o.status == 200 for o in served), failures(served)
    assert node.stop() == 0
    assert rt.store.all() == [] and rt.cgroups.ids() == set()


SOAK_CALLS = 2000
WEB = {"name": "web", "image": "busybox", "protocol": "http", "port": 8080,
       "command": "mkdir -p /tmp/www && echo hi > /tmp/www/index.html && "
                  "exec httpd -f -p 8080 -h /tmp/www",
       "pool": {"min": 4, "max": 4}}  # fmt: skip
WC = {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio",
      "pool": {"min": 4, "max": 4}}  # fmt: skip


def host_counts(node: Node, gateway: GatewayProcess) -> dict[str, float]:
    rt = node.runtime()
    with open("/proc/self/mountinfo") as f:
        mounts = sum(str(node.base) in line for line in f)
    return {
        "containers": len(rt.store.ids()),
        "cgroups": len(rt.cgroups.ids()),
        "netns": sum(n.startswith("scow-") for n in os.listdir("/run/netns")),
        "veths": sum(n.startswith("sv") for n in os.listdir("/sys/class/net")),
        "mounts": mounts,
        "node fds": open_fds(node.pid),
        "gateway fds": open_fds(gateway.pid),
        "node RSS MiB": rss_mib(node.pid),
        "gateway RSS MiB": rss_mib(gateway.pid),
    }


def strays(node: Node) -> dict[str, list[str]]:
    """Container dirs without a cgroup, and what is in them (for a failing count)."""
    rt = node.runtime()
    return {cid: sorted(p.name for p in rt.store.paths(cid).root.iterdir())
            for cid in set(rt.store.ids()) - rt.cgroups.ids()}  # fmt: skip


async def settled(redis: aioredis.Redis, node: Node) -> None:
    """Until both pools are full and idle again (min = max = 4: 8 containers, none busy,
    none being made or torn down)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pools = json.loads(await redis.hget(keys.NODES, node.node_id) or "{}")
        sizes = pools.get("functions", {})
        if all(sizes.get(f, {}).get("ready") == 4 and not sizes[f]["busy"]
               and not sizes[f]["creating"] and not sizes[f]["draining"]
               for f in ("web", "wc")):  # fmt: skip
            await asyncio.sleep(1.5)  # the throwaway containers' teardown ends
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"pools did not settle: {sizes}")


async def test_soak_2000_throwaway_calls_leave_every_count_flat(
    nodes: Callable[..., Node], gateways: Callable[..., GatewayProcess],
    redis_client: aioredis.Redis, figures: Figures,
) -> None:  # fmt: skip
    node, gateway = nodes(), gateways()
    node.start()
    gateway.start()
    await registered(redis_client, node)
    await deploy(gateway, WC)
    async with gateway.admin() as admin:
        assert (await admin.post("/system/functions", json=WEB)).status_code == 201
    sent = iter(range(SOAK_CALLS))
    bad: list[str] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            for i in sent:
                if i % 2:
                    r = await http.get("/function/web/")
                    ok = r.status_code == 200 and r.text == "hi\n"
                else:
                    r = await http.post("/function/wc", content=b"one two three\n")
                    ok = r.status_code == 200 and r.text.split() == ["1", "3", "14"]
                if not ok:
                    bad.append(f"{i}: {r.status_code} {r.text[:200]}")

    async def run(calls: int) -> float:
        nonlocal sent
        sent = iter(range(calls))
        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(8)))
        return time.monotonic() - started

    await run(200)  # warm up: every code path taken once, caches filled
    await settled(redis_client, node)
    first = host_counts(node, gateway)
    seconds = await run(SOAK_CALLS)
    await settled(redis_client, node)
    last = host_counts(node, gateway)
    figures("calls", SOAK_CALLS)
    figures("calls/s", round(SOAK_CALLS / seconds, 1))
    figures("failed calls", len(bad))
    for name in first:
        figures(f"{name} first -> last", f"{first[name]} -> {last[name]}")
    assert not bad, bad[:10]
    for name in ("containers", "cgroups", "netns", "veths", "mounts"):
        assert last[name] == first[name], (name, first, last, strays(node))
    for name in ("node fds", "gateway fds"):
        assert last[name] <= first[name] + 8, (name, first, last)
    for name in ("node RSS MiB", "gateway RSS MiB"):
        assert last[name] <= first[name] * 1.25 + 8, (name, first, last)
    assert node.stop() == 0
