"""Node commands through the client contract: any node, one node, errors."""

from __future__ import annotations

import json
import time

import pytest

from images.store import ImageStore
from pool.contract import keys
from pool.contract.client import PoolClient
from pool.contract.errors import CommandFailed
from pool.manager import PoolManager
from tests.pool.conftest import spec


async def test_node_info_and_image_commands(
    client: PoolClient, manager: PoolManager, function_images: ImageStore
) -> None:
    info = await client.command("node.info")
    assert info["node"] == manager.node_id and info["cgroups"] in ("v1", "v2")

    await client.deploy(spec(name="wc", image="examples/busybox-wc", protocol="stdio"))
    await manager.sync_functions()
    info = await client.command("node.info", node=manager.node_id)  # this node only
    assert set(info["functions"]) == {"wc"}

    listed = await client.command("images.list")
    tags = {t for image in listed for t in image["tags"]}
    assert {"busybox:latest", "examples/busybox-wc:latest"} <= tags
    inspected = await client.command("image.inspect", {"ref": "examples/busybox-wc"})
    assert inspected["config"]["config"]["Cmd"] == ["wc"]
    assert inspected["history"][0]["created_by"].startswith("CMD")


async def test_command_errors_carry_their_kind_and_reason(
    client: PoolClient, manager: PoolManager
) -> None:
    cases = [
        ("no.such.command", {}, "unknown_command"),
        ("image.inspect", {}, "invalid"),
        ("image.inspect", {"ref": "no/such:image"}, "not_found"),
        ("image.bootstrap", {"name": "windows"}, "not_found"),
    ]
    for name, args, error in cases:
        with pytest.raises(CommandFailed) as info:
            await client.command(name, args)
        assert info.value.error == error, info.value


async def test_command_for_a_node_that_is_not_there_times_out(client: PoolClient) -> None:
    with pytest.raises(CommandFailed) as info:
        await client.command("node.info", node="nobody", timeout=0.5)
    assert info.value.error == "timeout" and "node nobody" in info.value.message


async def test_a_command_to_a_node_that_stops_answering_fails_when_its_heartbeat_ends(
    client: PoolClient,
) -> None:
    """A node that was live and went silent (kill -9): its command fails as soon as the
    node counts as dead, not at the command's timeout."""
    await client.redis.hset(keys.NODES, "silent", json.dumps({"heartbeat": time.time()}))
    with pytest.raises(CommandFailed) as info:
        await client.command("node.info", node="silent", timeout=120)
    assert info.value.error == "node_gone", info.value
    assert "node silent stopped answering" in info.value.message
    await client.redis.hdel(keys.NODES, "silent")
