"""What a hostile function or caller can make grow has a cap it cannot pass: a reply, a
container's log, Redis, idempotency keys, stored results, environments. Real daemons;
the node whose memory is watched is a process of its own."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.redisd import RedisServer
from images.store import ImageStore
from pool.contract import keys
from pool.contract.client import Idempotency, PoolClient
from pool.contract.config import HostConfig
from pool.contract.errors import TooManyKeys
from pool.contract.keys import new_call_id
from pool.contract.messages import CallRequest
from pool.contract.specs import parse_spec
from pool.manager import PoolManager
from runtime.spec import RunOptions
from tests.conftest import opened_runtime, runtime_config_for
from tests.gateway.conftest import RunningGateway, serve
from tests.gateway.test_functions_api import eventually
from tests.processes import Node, rss_mib
from tests.runtime.helpers import BUSYBOX

pytestmark = pytest.mark.slow


def request(fn: str, client: PoolClient, timeout: float = 30.0) -> CallRequest:
    now = time.time()
    return CallRequest(new_call_id(fn), fn, deadline=now + timeout, enqueued=now,
                       reply_to=client.reply_stream)  # fmt: skip


async def test_a_reply_over_the_limit_is_a_502_and_costs_the_node_no_memory(
    nodes: Callable[..., Node], client: PoolClient, figures: Callable[[str, object], None]
) -> None:
    node = nodes()
    node.start()
    flood = parse_spec({"name": "flood", "image": "busybox", "protocol": "stdio",
                        "command": "head -c 1500000000 /dev/zero", "timeout": "60s"})  # fmt: skip
    serve_big = "head -c 10000000 /dev/zero > /tmp/big; exec httpd -f -p 8080 -h /tmp"
    big = parse_spec({"name": "big", "image": "busybox", "timeout": "30s",
                      "command": serve_big})  # fmt: skip
    await client.deploy(flood)
    await client.deploy(big)
    small = await client.call(request("big", client))  # warm: the node has loaded what it needs
    before = rss_mib(node.pid)
    result = await client.call(request("flood", client))
    assert result.status == 502 and result.error == "response_too_large", result
    assert str(6 << 20) in result.message
    over_http = await client.call(CallRequest(
        new_call_id("big"), "big", deadline=time.time() + 30, enqueued=time.time(),
        reply_to=client.reply_stream, method="GET", path="/big"))  # fmt: skip
    assert over_http.status == 502 and over_http.error == "response_too_large", over_http
    after = rss_mib(node.pid)
    figures("node RSS MiB before -> after a 1.5 GB reply", f"{before} -> {after}")
    assert after - before < 100, (before, after)
    assert small.status == 404  # httpd's answer for "/": served, and small


async def test_a_container_log_stays_under_its_size_limit(
    scow_dirs: tuple[Path, Path], test_bridge: str, busybox_layer: Path
) -> None:
    config = runtime_config_for(*scow_dirs, log_size_max=1 << 20)
    async with opened_runtime(config) as rt:
        rec = await rt.create(BUSYBOX, [busybox_layer], RunOptions(command=("yes", "scow")))
        await rt.start(rec.id)
        sizes, read = [], []
        for _ in range(20):
            await asyncio.sleep(0.1)
            sizes.append(rt.paths(rec.id).log.stat().st_size)
            lines, _ = rt.logs_from(rec.id, 0)  # empty when read just as it was cut back
            read += [ln.text for ln in lines[:-1]]
        await rt.remove(rec.id, force=True)
    assert read and set(read) == {"scow"}  # whole lines, readable however often it is cut
    assert max(sizes) <= (1 << 20) + (64 << 10), sizes  # conmon's last write may pass it


@pytest.fixture
async def small_redis() -> AsyncIterator[RedisServer]:
    base = Path(tempfile.mkdtemp(prefix="scow-redis-full-"))
    server = RedisServer(base / "redis.sock", base / "data", persist=False, maxmemory="4mb")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_a_full_redis_is_a_503_and_evicts_nothing(
    small_redis: RedisServer, settings: HostConfig, run_dir: Path
) -> None:
    full = replace(settings, redis_url=small_redis.url)
    redis = aioredis.Redis.from_url(small_redis.url)
    try:
        await PoolClient(redis).deploy(parse_spec({"name": "q", "image": "busybox"}))
        async with serve(full, run_dir) as gateway, gateway.tcp() as api:
            accepted, refused = 0, None
            for _ in range(200):
                response = await api.post("/async-function/q", content=b"x" * (64 << 10))
                if response.status_code != 202:
                    refused = response
                    break
                accepted += 1
            assert refused is not None and refused.status_code == 503, refused
            assert refused.json()["error"] == "redis_full"
            assert await redis.xlen(keys.calls_key("q")) == accepted  # none evicted
    finally:
        await redis.aclose()


async def test_idempotency_keys_have_a_cap(
    client: PoolClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "MAX_IDEMPOTENCY_KEYS", 3)
    for i in range(3):
        await client.submit(request("f", client), idempotency=Idempotency(f"k{i}", "x"))
    with pytest.raises(TooManyKeys, match="3 Idempotency-Keys"):
        await client.submit(request("f", client), idempotency=Idempotency("k3", "x"))
    again = await client.submit(request("f", client), idempotency=Idempotency("k0", "x"))
    assert again is not None  # a key seen before still answers


async def test_a_stored_result_has_a_cap_and_environments_a_count(
    gateway: RunningGateway, api: httpx.AsyncClient, manager: PoolManager,
    echo_images: ImageStore,
) -> None:  # fmt: skip
    spec = {"name": "echo", "image": "tests/echo", "timeout": "30s"}
    assert (await api.post("/system/functions", json=spec)).status_code == 201
    queued = await api.post("/async-function/echo", content=b"y" * (3 << 19))
    assert queued.status_code == 202
    call_id = queued.headers["x-call-id"]

    async def done() -> dict[str, object] | None:
        record: dict[str, object] = (await api.get(f"/system/calls/{call_id}")).json()
        return record if record["state"] == "done" else None

    record = await eventually(done, 60)
    assert record["status"] == 200 and record["body_dropped"] is True
    assert int(str(record["body_size"])) > keys.RECORD_BODY_LIMIT and "body" not in record

    manager.max_environments = 0
    refused = await api.post("/system/environments", json={"image": "busybox",
                                                           "cmd": "sleep 30"})  # fmt: skip
    assert refused.status_code == 429 and "environments" in refused.json()["message"]
