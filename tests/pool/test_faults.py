"""Pool managers as real processes: kill -9 under load, restart, a second node taking over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from pool.contract.client import PoolClient
from pool.contract.keys import GROUP, calls_key
from pool.contract.messages import CallResult
from tests.pool.conftest import spec
from tests.pool.test_calls import request
from tests.processes import Node

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
