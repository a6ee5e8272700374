"""Secrets reach the functions that name them as read-only files, and nothing else: not
env, records, events, logs, inspect, the state dir, or any Redis key but their own. And
the API token never reaches a function, however the client sent it."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from images.store import ImageStore
from pool.manager import PoolManager
from tests.gateway.conftest import TOKEN, RunningGateway
from tests.gateway.test_calls_api import ECHO, echo  # noqa: F401 (a fixture)
from tests.gateway.test_functions_api import eventually

VALUE = b"s3cr3t-" + os.urandom(8).hex().encode()
READER = {
    "name": "reader", "image": "busybox", "protocol": "stdio", "secrets": ["db-password"],
    "command": ["sh", "-c", "id -u; sha256sum /var/openfaas/secrets/db-password "
                "/run/secrets/db-password; env; stat -c %a /run/secrets/db-password; "
                "echo x > /run/secrets/db-password && echo WRITABLE; true"],
}  # fmt: skip


async def everything_in_redis(redis: aioredis.Redis) -> list[tuple[bytes, bytes]]:
    """Every key but the secrets hash, with all it holds."""
    out = []
    async for key in redis.scan_iter(count=1000):
        if key.endswith(b":secrets"):
            continue
        kind = (await redis.type(key)).decode()
        if kind == "string":
            data = repr(await redis.get(key)).encode()
        elif kind == "hash":
            data = repr(await redis.hgetall(key)).encode()
        elif kind == "list":
            data = repr(await redis.lrange(key, 0, -1)).encode()
        elif kind == "stream":
            data = repr(await redis.xrange(key)).encode()
        else:
            data = repr(await redis.smembers(key)).encode()
        out.append((key, data))
    return out


async def test_a_secret_is_a_read_only_file_and_nowhere_else(
    api: httpx.AsyncClient, manager: PoolManager, function_images: ImageStore,
    redis_client: aioredis.Redis, state_dir: Path,
) -> None:  # fmt: skip
    missing = await api.post("/system/functions", json=READER)
    assert missing.status_code == 400 and "db-password" in missing.text
    created = await api.post("/system/secrets", json={
        "name": "db-password", "rawValue": base64.b64encode(VALUE).decode()})  # fmt: skip
    assert created.status_code == 201, created.text
    assert (await api.post("/system/secrets", json={"name": "db-password", "value": "x"})
            ).status_code == 409  # fmt: skip
    assert (await api.get("/system/secrets")).json() == [{"name": "db-password"}]
    assert (await api.post("/system/functions", json=READER)).status_code == 201

    answer = await eventually(lambda: api.post("/function/reader", content=b""))
    assert answer.status_code == 200, answer.text
    lines = answer.text.splitlines()
    digest = hashlib.sha256(VALUE).hexdigest()
    assert lines[0] == "65534"  # the function's user reads it
    assert lines[1].split()[0] == digest and lines[2].split()[0] == digest
    assert "400" in lines and "WRITABLE" not in answer.text
    assert VALUE.decode() not in answer.text  # not in its env

    call = (await api.get(f"/system/calls/{answer.headers['x-call-id']}")).json()
    events = (await api.get("/events", params={"until": "0"})).content
    logs = (await api.get("/system/logs", params={"name": "reader"})).content
    for where in (repr(call).encode(), events, logs):
        assert VALUE not in where
    for key, data in await everything_in_redis(redis_client):
        assert VALUE not in data, key
    for path in state_dir.rglob("*"):  # warm instances are there now, bundles and all
        if path.is_file() and not path.is_symlink() and "secrets" not in path.parts and (
            "rootfs" not in path.parts
        ):
            assert VALUE not in path.read_bytes(), path
    for record in manager.runtime.containers():
        assert VALUE.decode() not in repr(record)

    in_use = await api.delete("/system/secrets", params={"name": "db-password"})
    assert in_use.status_code == 409 and "reader" in in_use.text
    await api.request("DELETE", "/system/functions", params={"name": "reader"})
    assert (await api.delete("/system/secrets", params={"name": "db-password"})).status_code == 200


async def test_the_api_token_never_reaches_a_function(
    gateway: RunningGateway, echo: str,  # noqa: F811
) -> None:
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    sent = [
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"Basic {basic}"},
        {"X-Api-Key": TOKEN, "Cookie": f"session={TOKEN}"},
        {"Proxy-Authorization": f"Bearer {TOKEN}"},
    ]
    async with gateway.tcp(token=None) as anonymous:
        for headers in sent:
            response = await anonymous.post("/function/echo", content=b"x", headers=headers)
            assert response.status_code == 200, response.text
            assert TOKEN not in response.text, headers
            assert "proxy-authorization" not in response.json()["headers"]
        own = await anonymous.post("/function/echo", headers={"Authorization": "Bearer fn-own"})
    # A function deployed without auth may do its own: a credential of its own reaches it.
    assert own.json()["headers"]["authorization"] == "Bearer fn-own"
