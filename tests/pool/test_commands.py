"""Node commands through the client contract: any node, one node, errors."""

from __future__ import annotations

import pytest

from images.store import ImageStore
from pool.contract import CommandFailed, PoolClient
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


async def test_command_errors_carry_status_and_reason(
    client: PoolClient, manager: PoolManager
) -> None:
    cases = [
        ("no.such.command", {}, 404, "unknown_command"),
        ("image.inspect", {}, 400, "bad_request"),
        ("image.inspect", {"ref": "no/such:image"}, 404, "not_found"),
        ("image.bootstrap", {"name": "windows"}, 404, "not_found"),
    ]
    for name, args, status, error in cases:
        with pytest.raises(CommandFailed) as info:
            await client.command(name, args)
        assert (info.value.status, info.value.error) == (status, error), info.value


async def test_command_for_a_node_that_is_not_there_times_out(client: PoolClient) -> None:
    with pytest.raises(CommandFailed) as info:
        await client.command("node.info", node="nobody", timeout=0.5)
    assert info.value.status == 504 and "node nobody" in info.value.message
