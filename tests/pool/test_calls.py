"""Functions deployed through the client contract and called through Redis and a node."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from images.store import ImageStore
from pool.contract.client import PoolClient
from pool.contract.keys import new_call_id
from pool.contract.messages import CallRequest, CallResult
from pool.contract.specs import FunctionSpec
from pool.manager import PoolManager
from runtime.engine import Runtime
from tests.pool.conftest import spec


def request(fn: str, body: bytes = b"", timeout: float = 10.0, **kw: object) -> CallRequest:
    now = time.time()
    return CallRequest(new_call_id(fn), fn, deadline=now + timeout, body=body, enqueued=now, **kw)  # type: ignore[arg-type]


async def call(client: PoolClient, fn: str, body: bytes = b"", timeout: float = 10.0) -> CallResult:
    return await client.call(
        request(fn, body, timeout, reply_to=client.reply_stream, method="POST", path="/")
    )


async def deploy(client: PoolClient, manager: PoolManager, s: FunctionSpec) -> None:
    await client.deploy(s)
    await manager.sync_functions()
    pool = manager.workers[s.name].pool
    for _ in range(500):  # wait for the pool to be warm
        if len(pool.ready) >= s.pool_min:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{s.name}: pool never became warm")


async def gone_within(runtime: Runtime, container: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if runtime.store.load(container) is None:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.slow
async def test_stdio_wc_100_calls_each_in_a_fresh_container(
    client: PoolClient, manager: PoolManager, runtime: Runtime
) -> None:
    await deploy(client, manager, spec(name="wc", image="examples/busybox-wc", protocol="stdio"))
    containers = set()
    for i in range(100):
        body = b"word " * i
        result = await call(client, "wc", body)
        assert result.status == 200, result
        assert result.body.split() == [b"0", str(i).encode(), str(len(body)).encode()]
        containers.add(result.container)
        if i % 10 == 0:
            assert await gone_within(runtime, result.container, 1.0)
    assert len(containers) == 100


@pytest.mark.slow
async def test_python_hello_100_calls_each_in_a_fresh_container(
    client: PoolClient, python_images: ImageStore, redis_client: object, runtime: Runtime,
) -> None:  # fmt: skip
    m = PoolManager(redis_client, runtime, python_images, sync_every=0.05)  # type: ignore[arg-type]
    await m.start()
    try:
        await deploy(client, m, spec(name="hello", image="examples/python-hello"))
        hostnames = set()
        for i in range(100):
            result = await call(client, "hello", f"caller{i}".encode())
            assert result.status == 200, result
            reply = json.loads(result.body)
            assert reply["hello"] == f"caller{i}"
            hostnames.add(reply["hostname"])
            if i % 10 == 0:
                assert await gone_within(runtime, result.container, 1.0)
        assert len(hostnames) == 100
    finally:
        await m.stop()


@pytest.mark.slow
async def test_after_a_warm_up_100_calls_in_a_row_find_their_fresh_container_ready(
    client: PoolClient, manager: PoolManager
) -> None:
    """The pool sizes itself by the call rate (pool/sizing.py): one client calling a
    throwaway function as fast as it answers finds a fresh container ready each time."""
    await deploy(client, manager, spec(name="row", image="examples/busybox-wc", protocol="stdio"))
    for _ in range(20):  # the warm-up: the pool learns the rate and its make time
        assert (await call(client, "row", b"x")).status == 200
    results = [await call(client, "row", b"x") for _ in range(100)]
    assert all(r.status == 200 for r in results)
    assert len({r.container for r in results}) == 100  # each call its own container
    cold = sum(r.cold for r in results)
    assert cold <= 1, f"{cold} of 100 calls waited for their container"
    assert manager.workers["row"].pool.last_target.rule == "rate"


async def test_warm_then_cold_after_scale_to_zero(client: PoolClient, manager: PoolManager) -> None:
    s = spec(name="zero", image="examples/busybox-wc", protocol="stdio", idle_ttl="1s",
             pool={"min": 0, "max": 2})  # fmt: skip
    await client.deploy(s)
    await manager.sync_functions()
    first = await call(client, "zero", b"a")
    assert first.status == 200 and first.cold  # nothing was warm: min is 0
    pool = manager.workers["zero"].pool
    for _ in range(200):  # the throwaway container is replaced while it is wanted...
        if pool.ready:
            break
        await asyncio.sleep(0.02)
    warm = await call(client, "zero", b"b")
    assert warm.status == 200 and not warm.cold
    await asyncio.sleep(1.5)
    await pool.shrink()  # ...and dropped after idle_ttl: scaled to zero
    assert pool.total == 0
    again = await call(client, "zero", b"c")
    assert again.status == 200 and again.cold


async def test_timeout_oom_and_exit_code(client: PoolClient, manager: PoolManager) -> None:
    await deploy(client, manager, spec(name="sleepy", image="busybox", protocol="stdio",
                                       command="sleep 10", timeout="1s"))  # fmt: skip
    started = time.time()
    slow = await call(client, "sleepy", timeout=1.0)
    late = time.time() - started
    assert (slow.status, slow.error, slow.part) == (504, "timeout", "run"), slow
    assert late < 1.5, f"answered {late - 1.0:.2f}s after the deadline"

    await deploy(client, manager, spec(name="hog", image="busybox", protocol="stdio",
                                       command="dd if=/dev/zero of=/dev/null bs=64M",
                                       memory="32m"))  # fmt: skip
    hog = await call(client, "hog")
    assert (hog.status, hog.error) == (502, "oom"), hog
    assert "OOM" in hog.message

    await deploy(client, manager, spec(name="three", image="busybox", protocol="stdio",
                                       command="echo bad news >&2; exit 3"))  # fmt: skip
    three = await call(client, "three")
    assert (three.status, three.error) == (502, "crash"), three
    assert "exit code 3" in three.message and "bad news" in three.message
    body = json.loads(three.body)
    assert body["error"] == "crash"


async def test_busy_loop_is_killed_at_the_deadline(
    client: PoolClient, manager: PoolManager, runtime: Runtime
) -> None:
    await deploy(client, manager, spec(name="spin", image="busybox", protocol="stdio",
                                       command="while :; do :; done", timeout="1s"))  # fmt: skip
    started = time.time()
    spun = await call(client, "spin", timeout=1.0)
    assert (spun.status, spun.error, spun.part) == (504, "timeout", "run"), spun
    assert time.time() - started < 1.5
    # The container that spun is gone, not left burning a CPU.
    for _ in range(100):
        if runtime.store.load(spun.container) is None:
            break
        await asyncio.sleep(0.05)
    assert runtime.store.load(spun.container) is None, f"{spun.container} still there"
    assert not runtime.cgroups.exists(spun.container)


async def test_unknown_image_answers_502(client: PoolClient, manager: PoolManager) -> None:
    await client.deploy(spec(name="ghost", image="no/such:image", protocol="stdio"))
    await manager.sync_functions()
    result = await call(client, "ghost")
    assert (result.status, result.error) == (502, "no_image")
    assert "no/such:image" in result.message


async def test_call_that_keeps_killing_nodes_goes_to_dead_letters(
    client: PoolClient, manager: PoolManager
) -> None:
    from pool.contract.keys import DEAD, GROUP, calls_key

    key = calls_key("deadly")
    await client.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
    pending = asyncio.create_task(call(client, "deadly", b"x", timeout=10.0))
    for _ in range(100):
        if await client.redis.xlen(key):
            break
        await asyncio.sleep(0.01)
    # Three nodes took it and died without a heartbeat: delivered three times.
    got = await client.redis.xreadgroup(GROUP, "ghost-1", {key: ">"}, count=1)
    entry_id = got[0][1][0][0]
    for ghost in ("ghost-2", "ghost-3"):
        await client.redis.xclaim(key, GROUP, ghost, min_idle_time=0, message_ids=[entry_id])
    await client.deploy(spec(name="deadly", image="examples/busybox-wc", protocol="stdio"))
    await manager.sync_functions()
    # the manager takes it over within a second (its loop)
    result = await pending
    assert (result.status, result.error) == (502, "dead_letter"), result
    assert "delivered 3 times" in result.message
    assert await client.redis.xlen(DEAD) == 1
    assert (await client.redis.xpending(key, GROUP))["pending"] == 0


SLEEPY_HANDLER = """
import socket, time

def handle(event, context):
    time.sleep(0.5)
    return socket.gethostname()
"""


@pytest.mark.slow
async def test_concurrency_shares_one_reusable_container(
    client: PoolClient, python_images: ImageStore, redis_client: object, runtime: Runtime,
    tmp_path: object,
) -> None:  # fmt: skip
    from pathlib import Path

    from images.builder import Builder, BuildOptions

    ctx = Path(str(tmp_path))
    (ctx / "Dockerfile").write_text("FROM scow/python\nCOPY handler.py /function/handler.py\n")
    (ctx / "handler.py").write_text(SLEEPY_HANDLER)
    await Builder(python_images, runtime, progress=lambda line: None).build(
        BuildOptions(ctx, tag="tests/sleepy")
    )
    m = PoolManager(redis_client, runtime, python_images, sync_every=0.05)  # type: ignore[arg-type]
    await m.start()
    try:
        await deploy(client, m, spec(name="sleepy", image="tests/sleepy", max_invocations=0,
                                     concurrency=4, pool={"min": 1, "max": 1}))  # fmt: skip
        started = time.perf_counter()
        results = await asyncio.gather(*(call(client, "sleepy") for _ in range(4)))
        elapsed = time.perf_counter() - started
        assert all(r.status == 200 for r in results), results
        assert len({r.body for r in results}) == 1  # one container served all four
        assert elapsed < 1.5, f"four 0.5 s calls took {elapsed:.2f}s: they did not overlap"
        assert m.workers["sleepy"].pool.total == 1
    finally:
        await m.stop()


async def test_a_node_stopping_while_a_function_is_removed_leaves_nothing(
    client: PoolClient, manager: PoolManager
) -> None:
    """The sync loop stops a removed function's worker; a node told to stop right then
    cancels that loop, and must still destroy the worker's containers."""
    await deploy(client, manager, spec(name="gone", image="examples/busybox-wc",
                                       protocol="stdio", pool={"min": 3}))  # fmt: skip
    assert len(manager.runtime.containers()) == 3
    await client.remove("gone")
    sync = asyncio.create_task(manager.sync_functions())
    for _ in range(200):  # until the worker is out of the table: its stop is under way
        if "gone" not in manager.workers:
            break
        await asyncio.sleep(0.001)
    sync.cancel()
    await manager.stop()
    assert manager.runtime.containers() == []


async def test_stdio_calls_run_side_by_side_however_many_there_are(
    client: PoolClient, manager: PoolManager
) -> None:
    """Twelve calls that read their input, then take 1 s, each well inside a 4 s deadline.

    A call's pipes are read and written by the event loop, not by threads of a small
    shared pool: when they were, three calls held every thread of a 2-core node, and
    the fourth call's input waited for one of them to end.
    """
    n = 12
    await deploy(client, manager, spec(name="slowcat", image="busybox", protocol="stdio",
                                       command="cat; sleep 1", timeout="4s",
                                       pool={"min": n, "max": n}))  # fmt: skip
    results = await asyncio.gather(
        *(call(client, "slowcat", f"call {i}".encode(), timeout=4) for i in range(n))
    )
    late = [r.message for r in results if r.status != 200]
    assert not late, late
    assert [r.body for r in results] == [f"call {i}".encode() for i in range(n)]


async def test_stdio_input_and_output_far_past_a_pipe_buffer(
    client: PoolClient, manager: PoolManager
) -> None:
    await deploy(client, manager, spec(name="echo", image="busybox", protocol="stdio",
                                       command="tee /dev/stderr", pool={"min": 1}))  # fmt: skip
    body = bytes(range(256)) * (3 << 12)  # 3 MiB, written while both outputs are read
    result = await call(client, "echo", body)
    assert result.status == 200, result
    assert len(result.body) == len(body) and result.body == body


@pytest.mark.slow
async def test_a_node_with_more_functions_than_connections_in_a_pool_still_answers(
    client: PoolClient, manager: PoolManager
) -> None:
    """Each function's reader blocks on a connection of its own for up to a second; 150 of
    them (redis-py's pool holds 100) once starved the node's replies and heartbeat, and a
    node with 200 functions was taken for dead. Now the readers have a pool of their own."""
    idle = [spec(name=f"idle{i:03d}", image="examples/busybox-wc", protocol="stdio",
                 pool={"min": 0}) for i in range(150)]  # fmt: skip
    for s in idle:
        await client.deploy(s)
    await manager.sync_functions()
    await asyncio.sleep(1.5)  # every reader in its blocking read
    await deploy(client, manager, spec(name="wc", image="examples/busybox-wc", protocol="stdio"))
    results = [await call(client, "wc", b"one two three", timeout=15) for _ in range(3)]
    assert [r.status for r in results] == [200, 200, 200], [r.message for r in results]
    await manager._heartbeat_once()  # the beat itself, not its loop's timing
    assert (await client.nodes())[manager.node_id]["live"]
    for s in idle:
        await client.remove(s.name)
