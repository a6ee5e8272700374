"""Pool managers as real processes: kill -9 under load, restart, a second node taking over."""

from __future__ import annotations

import asyncio
import ctypes
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from images.store import ImageStore
from pool.contract import GROUP, CallResult, PoolClient, calls_key
from runtime.engine import Runtime, RuntimeConfig
from tests.conftest import REPO, TEST_BRIDGE, TEST_SUBNET
from tests.pool.conftest import spec
from tests.pool.test_calls import request

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def not_subreaper() -> Iterator[None]:
    """Orphans of a killed node go to init, not to pytest (which would have to reap them)."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Node:
    def __init__(self, redis_url: str, base: Path, images: ImageStore) -> None:
        self.redis_url, self.base, self.images = redis_url, base, images
        self.cgroup_parent = f"scow-test-{secrets.token_hex(3)}"
        self.node_id = f"{base.name}-{secrets.token_hex(3)}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pool", "--redis-url", self.redis_url,
             "--state-dir", str(self.base / "state"), "--run-dir", str(self.base / "run"),
             "--images", str(self.images.root), "--cgroup-parent", self.cgroup_parent,
             "--bridge", TEST_BRIDGE, "--subnet", str(TEST_SUBNET), "--node-id", self.node_id,
             "--metrics-port", "0"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def runtime(self) -> Runtime:
        return Runtime(RuntimeConfig(
            state_dir=self.base / "state", run_dir=self.base / "run",
            cgroup_parent=self.cgroup_parent, bridge=TEST_BRIDGE, subnet=TEST_SUBNET,
        ))  # fmt: skip

    async def clean(self) -> None:
        """Whatever a killed node left: removed by a runtime on its dirs."""
        rt = self.runtime()
        await rt.open()
        for record in rt.store.all():
            await rt.destroy(record.id)
        await rt.reap()


@pytest.fixture
async def nodes(
    redis_url: str, scow_dirs: tuple[Path, Path], function_images: ImageStore, not_subreaper: None
) -> AsyncIterator[Callable[[], Node]]:
    made: list[Node] = []

    def make() -> Node:
        node = Node(redis_url, scow_dirs[0].parent / f"node{len(made)}", function_images)
        made.append(node)
        return node

    yield make
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()
        await node.clean()


SLOW_CAT = spec(name="slowcat", image="busybox", protocol="stdio", command="sleep 0.3; cat",
                timeout="15s", pool={"min": 2, "max": 8})  # fmt: skip


async def in_flight(client: PoolClient) -> dict[str, int]:
    """Calls each node has taken and not answered yet (XPENDING by consumer)."""
    summary = await client.redis.xpending(calls_key("slowcat"), GROUP)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


async def kill_while_busy(client: PoolClient, node: Node) -> None:
    """Kill ``node`` at a moment when it holds calls it has not answered."""
    for _ in range(500):
        if (await in_flight(client)).get(node.node_id, 0) > 0:
            node.kill()
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"node {node.node_id} never held a call")


async def answers(client: PoolClient, count: int, timeout: float) -> list[tuple[CallResult, float]]:
    async def one(i: int) -> tuple[CallResult, float]:
        req = request("slowcat", f"call{i}".encode(), timeout, reply_to=client.reply_stream)
        result = await client.call(req, grace=5.0)
        return result, req.deadline - time.time()

    return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.slow
async def test_kill_9_with_50_calls_in_flight_then_restart(
    client: PoolClient, nodes: Callable[[], Node]
) -> None:
    node = nodes()
    node.start()
    await client.deploy(SLOW_CAT)
    load = asyncio.create_task(answers(client, 50, 15.0))
    await kill_while_busy(client, node)
    node.start()  # the same node again: new process, same dirs
    results = await load
    for result, left in results:
        assert result.node, f"answered by no node (the client's own timeout): {result}"
        assert left > 0, f"answered {-left:.2f}s after the deadline: {result}"
        assert result.status == 200 or (result.status in (502, 504) and result.message)
    ok = [r for r, _ in results if r.status == 200]
    assert len(ok) >= 45, [r.message for r, _ in results if r.status != 200]
    assert node.stop() == 0
    rt = node.runtime()
    assert rt.store.all() == [] and rt.cgroups.ids() == set()


@pytest.mark.slow
async def test_second_node_finishes_the_calls_of_a_killed_one(
    client: PoolClient, nodes: Callable[[], Node]
) -> None:
    first, second = nodes(), nodes()
    first.start()
    second.start()
    await client.deploy(SLOW_CAT)
    load = asyncio.create_task(answers(client, 40, 15.0))
    await kill_while_busy(client, first)
    results = await load
    assert all(r.status == 200 for r, _ in results), [r.message for r, _ in results]
    # Every call succeeded, the ones the dead node held included: the other node ran them.
    assert second.node_id in {r.node for r, _ in results}
    assert second.stop() == 0
