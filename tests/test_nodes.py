"""Several nodes on this machine, each with its own state and run dirs, bridge, subnet,
cgroup parent and image store, against one Redis, one gateway and a real registry: a
function deployed by registry reference runs on both; a node killed -9 loses no call;
a node drained exits with nothing left while the other goes on serving."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import tempfile
from ipaddress import IPv4Network
from pathlib import Path

import httpx
import pytest

from images.distribution import Remote, push
from images.registry import Credentials
from images.store import ImageStore
from runtime.network import BridgeNetwork
from tests import leakcheck
from tests.processes import GatewayProcess, Node
from tests.registry import REGISTRY, registry

pytestmark = [pytest.mark.skipif(REGISTRY is None, reason="no docker-registry"),
              pytest.mark.slow]  # fmt: skip

NETS = (("scowtsta0", IPv4Network("10.231.0.0/24")), ("scowtstb0", IPv4Network("10.232.0.0/24")))


async def _nodes(api: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    return {n["id"]: n for n in (await api.get("/system/nodes")).json()}


async def _calls(api: httpx.AsyncClient, seconds: float, clients: int = 4) -> collections.Counter:
    """Calls of ``wc`` for ``seconds`` by ``clients`` at once: the count by node and by
    status (every call must come back)."""
    counts: collections.Counter[str] = collections.Counter()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def client() -> None:
        while loop.time() < end:
            r = await api.post("/function/wc", content=b"one two three\n")
            counts[f"status {r.status_code}"] += 1
            if r.status_code == 200:
                assert r.content.split() == [b"1", b"3", b"14"], r.content
                counts[r.headers["x-scow-node"]] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return counts


async def test_two_nodes_a_registry_function_a_kill_and_a_drain(
    redis_url: str, function_images: ImageStore, not_subreaper: None, test_bridge: str
) -> None:
    base = Path(tempfile.mkdtemp(prefix="scow-nodes-"))
    leakcheck.watch_mounts_under(base)
    nodes = [Node(redis_url, base / name, None, bridge, subnet)
             for name, (bridge, subnet) in zip(("a", "b"), NETS, strict=True)]  # fmt: skip
    gateway = GatewayProcess(redis_url, base / "gateway")
    try:
        with registry(base / "registry") as reg:
            image = f"{reg.host}/fn/wc:1"
            await push(function_images, "examples/busybox-wc", Remote.parse(image),
                       Credentials(), lambda progress: None)  # fmt: skip
            for node in nodes:
                node.start()
            gateway.start()
            async with gateway.admin() as api:
                await _until(lambda: _live(api, {n.node_id for n in nodes}), "both nodes live")
                deployed = await api.post("/system/functions", json={
                    "name": "wc", "image": image, "protocol": "stdio", "pool": {"min": 1}})
                assert deployed.status_code == 201, deployed.text
                answer = deployed.json()
                assert answer["image"].startswith(f"{reg.host}/fn/wc@sha256:")  # pinned
                assert answer["nodes"]["ready"], answer  # answered once one node pulled it

                async def both_ready() -> bool:
                    found = await _nodes(api)
                    return all(found.get(n.node_id, {}).get("warm") for n in nodes)

                await _until(both_ready, "the function warm on both nodes")
                counts = await _calls(api, 3)
                assert all(counts[n.node_id] > 0 for n in nodes), counts  # both served

                a, b = nodes
                calls = asyncio.create_task(_calls(api, 6))
                await asyncio.sleep(1)
                a.kill()  # kill -9 under load
                counts = await calls
                assert set(counts) <= {"status 200", a.node_id, b.node_id}, counts  # none lost
                assert counts[b.node_id] > 0

                a.start()  # the same dirs: it cleans what it left, and serves again
                await _until(lambda: _live(api, {a.node_id, b.node_id}), "a back")
                drained = await api.post(f"/system/nodes/{b.node_id}/drain")
                assert drained.status_code == 202, drained.text
                counts = await _calls(api, 4)
                assert set(counts) <= {"status 200", a.node_id, b.node_id}, counts
                assert b.proc is not None
                assert b.proc.wait(30) == 0, b.log_tail()  # it exits once idle, on its own
                left = leakcheck.scow_leftovers(b.base / "state", b.base / "run")
                assert not left, left  # with nothing left
                counts = await _calls(api, 2)
                assert counts[a.node_id] > 0 and set(counts) <= {"status 200", a.node_id}
                assert b.node_id not in await _nodes(api)
                await api.delete("/system/functions", params={"name": "wc"})
    finally:
        gateway.stop_if_running()
        for node in nodes:
            with contextlib.suppress(AssertionError):
                node.stop_if_running()
            await node.clean()
        for bridge, subnet in NETS:
            await asyncio.to_thread(BridgeNetwork(base, bridge, subnet).remove_bridge)


        shutil.rmtree(base, ignore_errors=True)


async def _live(api: httpx.AsyncClient, wanted: set[str]) -> bool:
    found = await _nodes(api)
    return all(found.get(n, {}).get("live") for n in wanted)


async def _until(check, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
