"""Throwaway environments over real HTTP: a Redis a test can use, gone when its lease ends."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import warnings

import httpx
import pytest
import redis

from images.store import ImageStore
from pool.contract import keys
from pool.environments import UNLEASED_GRACE
from pool.manager import PoolManager
from runtime.engine import Runtime
from tests.gateway.test_functions_api import eventually


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def node(manager: PoolManager, redis_images: ImageStore) -> PoolManager:
    return manager


async def test_redis_environment_is_usable_then_expires(
    api: httpx.AsyncClient, node: PoolManager
) -> None:
    created = await api.post(
        "/system/environments", json={"image": "examples/redis", "ports": [6379], "ttl": "4s"}
    )
    assert created.status_code == 201, created.text
    env = created.json()
    port = env["ports"]["6379"]
    assert env["ip"].startswith("10.214.0.") and env["expires_at"].endswith("Z")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        assert client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
    finally:
        client.close()
    listed = (await api.get("/system/environments")).json()
    assert [e["id"] for e in listed] == [env["id"]]
    one = (await api.get(f"/system/environments/{env['id']}")).json()
    assert one["ports"] == {"6379": port} and 0 < one["expires_in"] <= 4

    async def gone() -> bool:
        response = await api.get(f"/system/environments/{env['id']}")
        return response.status_code == 404 and not node.runtime.containers()

    await eventually(gone, timeout=15)
    assert not _port_open(port)


async def test_extend_and_delete(api: httpx.AsyncClient, node: PoolManager) -> None:
    env = (await api.post("/system/environments", json={
        "image": "examples/redis", "ports": [6379], "ttl": "3s",
        "wait": {"log": "Ready to accept connections"}})).json()  # fmt: skip
    extended = await api.patch(f"/system/environments/{env['id']}", json={"ttl": "1h"})
    assert extended.status_code == 200 and extended.json()["expires_in"] > 3500
    await asyncio.sleep(4)  # past the first lease: the extension holds
    assert _port_open(env["ports"]["6379"])
    bad = await api.patch(f"/system/environments/{env['id']}", json={"ttl": "forever"})
    assert bad.status_code == 400 and "ttl" in bad.json()["message"]
    deleted = await api.delete(f"/system/environments/{env['id']}")
    assert deleted.status_code == 200 and deleted.json()["containers"] == 1
    assert node.runtime.containers() == []
    assert not _port_open(env["ports"]["6379"])
    assert (await api.delete(f"/system/environments/{env['id']}")).status_code == 404
    assert (await api.patch(f"/system/environments/{env['id']}", json={"ttl": "1m"})
            ).status_code == 404  # fmt: skip


async def test_wait_kinds(api: httpx.AsyncClient, node: PoolManager) -> None:
    """cmd and http waits; a container that exits early fails with its log, leaving nothing."""
    by_cmd = await api.post("/system/environments", json={
        "image": "examples/redis", "ports": [6379],
        "wait": {"cmd": ["redis-cli", "ping"]}})  # fmt: skip
    assert by_cmd.status_code == 201, by_cmd.text
    by_http = await api.post("/system/environments", json={
        "image": "busybox", "cmd": "mkdir -p /www && echo ok > /www/up && httpd -f -p 80 -h /www",
        "ports": [80], "wait": {"http": "/up"}})  # fmt: skip
    assert by_http.status_code == 201, by_http.text
    assert httpx.get(f"http://127.0.0.1:{by_http.json()['ports']['80']}/up").text == "ok\n"
    for env in (by_cmd.json(), by_http.json()):
        assert (await api.delete(f"/system/environments/{env['id']}")).status_code == 200

    failed = await api.post("/system/environments", json={
        "image": "busybox", "cmd": "echo broken config >&2; exit 3", "ports": [80]})  # fmt: skip
    assert failed.status_code == 502, failed.text
    assert "code 3" in failed.json()["message"] and "broken config" in failed.json()["message"]
    slow = await api.post("/system/environments", json={
        "image": "busybox", "cmd": "sleep 60", "wait": {"port": 80, "timeout": "1s"}})  # fmt: skip
    assert slow.status_code == 504 and "within 1s" in slow.json()["message"]
    assert node.runtime.containers() == []
    assert (await api.get("/system/environments")).json() == []


async def test_bad_requests_name_the_field(api: httpx.AsyncClient, node: PoolManager) -> None:
    cases = [
        ({"ports": [6379]}, "image"),
        ({"image": "examples/redis", "ports": [70000]}, "ports"),
        ({"image": "examples/redis", "ttl": "soon"}, "ttl"),
        ({"image": "examples/redis", "wait": {"log": "("}}, "wait.log"),
        ({"image": "examples/redis", "wait": {"http": "/"}}, "port"),
        ({"image": "examples/redis", "volumes": ["/:/host"]}, "volumes"),
    ]
    for body, field in cases:
        response = await api.post("/system/environments", json=body)
        assert response.status_code == 400, body
        assert field in response.json()["message"], response.json()
    unknown = await api.post("/system/environments", json={"image": "not/built"})
    assert unknown.status_code == 404 and "not/built" in unknown.json()["message"]
    assert node.runtime.containers() == []


async def test_the_node_removes_a_lease_nobody_holds(
    api: httpx.AsyncClient,
    node: PoolManager,
    redis_client: redis.asyncio.Redis,  # type: ignore[name-defined]
) -> None:
    env = (await api.post("/system/environments", json={"image": "busybox", "cmd": "sleep 600",
                                                         "ttl": "1h"})).json()  # fmt: skip
    # Its lease vanishes (a flushed Redis, say): the container goes once it is old enough.
    await redis_client.hdel(keys.ENVIRONMENTS, env["id"])
    assert len(node.runtime.containers()) == 1
    record = node.runtime.containers()[0]
    node.runtime.store.save(record.evolve(created=time.time() - UNLEASED_GRACE - 1))
    await eventually(lambda: _none_left(node), timeout=10)


async def _none_left(node: PoolManager) -> bool:
    return not node.runtime.containers()


async def test_an_environment_outlives_a_restart_of_its_node(
    api: httpx.AsyncClient,
    node: PoolManager,
    redis_client: redis.asyncio.Redis,  # type: ignore[name-defined]
) -> None:
    env = (await api.post("/system/environments", json={
        "image": "examples/redis", "ports": [6379], "ttl": "1h"})).json()  # fmt: skip
    await node.stop()
    # A restart drops the old process's handles on its port proxies without waiting
    # for them (the new one finds the proxies by pid): do the same to this object.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        node.runtime._proxies.clear()
        gc.collect()
    second = PoolManager(redis_client, Runtime(node.runtime.config), node.images,
                         node_id=node.node_id, sync_every=0.05)  # fmt: skip
    await second.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=env["ports"]["6379"], socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()
        assert (await api.get(f"/system/environments/{env['id']}")).status_code == 200
        assert (await api.delete(f"/system/environments/{env['id']}")).status_code == 200
        assert second.runtime.containers() == []
    finally:
        await second.stop()
