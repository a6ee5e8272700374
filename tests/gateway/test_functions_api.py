"""Function routes over real HTTP, with a real node behind the gateway: on one Redis and
on a Redis Cluster."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from pool.manager import PoolManager


async def eventually(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.05)


@pytest.fixture
def redis_url(single_or_cluster_redis_url: str) -> str:
    return single_or_cluster_redis_url


WC = {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio"}


async def test_deploy_list_inspect_update_delete(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    created = await api.post("/system/functions", json={**WC, "labels": {"team": "a"}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "wc" and body["memory"] == 128 << 20 and body["pool"]["min"] == 1
    assert body["labels"] == {"team": "a"} and body["invocationCount"] == 0

    again = await api.post("/system/functions", json=WC)
    assert again.status_code == 409 and again.json()["error"] == "exists"

    listed = (await api.get("/system/functions")).json()
    assert [f["name"] for f in listed] == ["wc"]
    one = await api.get("/system/function/wc")
    assert one.status_code == 200 and one.json()["image"] == "examples/busybox-wc"
    # The node warms an instance: availableReplicas counts it from its heartbeat.
    await eventually(lambda: _available(api, "wc"), timeout=20)

    updated = await api.put("/system/functions", json={**WC, "timeout": "5s"})
    assert updated.status_code == 200 and updated.json()["timeout"] == 5.0
    missing = await api.put("/system/functions", json={**WC, "name": "nope"})
    assert missing.status_code == 404

    deleted = await api.request("DELETE", "/system/functions", json={"functionName": "wc"})
    assert deleted.status_code == 200
    assert (await api.get("/system/function/wc")).status_code == 404
    gone = await api.delete("/system/functions", params={"name": "wc"})
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


async def _available(api: httpx.AsyncClient, name: str) -> bool:
    return bool((await api.get(f"/system/function/{name}")).json()["availableReplicas"])


async def test_openfaas_field_names(api: httpx.AsyncClient, manager: PoolManager) -> None:
    response = await api.post(
        "/system/functions",
        json={"service": "wc2", "image": "examples/busybox-wc", "protocol": "stdio",
              "envVars": {"A": "1"}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["env"] == ["A=1"]


async def test_bad_specs_are_refused_with_the_field(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    cases = [
        ({"name": "Bad_Name", "image": "busybox"}, "name"),
        ({"name": "ok", "image": "busybox", "memory": "lots"}, "memory"),
        ({"name": "ok", "image": "busybox", "colour": "red"}, "colour"),
        ({"name": "ok", "image": "busybox", "pool": {"min": 5, "max": 2}}, "pool.min"),
    ]
    for spec, field in cases:
        response = await api.post("/system/functions", json=spec)
        assert response.status_code == 400, spec
        assert response.json()["error"] == "invalid_spec"
        assert field in response.json()["message"], response.json()
    no_image = await api.post("/system/functions", json={"name": "ok", "image": "not/built"})
    assert no_image.status_code == 400 and "not/built" in no_image.json()["message"]
    for raw in (b"{not json", b"[1, 2]", b""):
        response = await api.post("/system/functions", content=raw)
        assert response.status_code == 400 and set(response.json()) == {"error", "message"}
    assert (await api.get("/system/functions")).json() == []  # nothing half-made


async def test_scale_keeps_that_many_warm(api: httpx.AsyncClient, manager: PoolManager) -> None:
    assert (await api.post("/system/functions", json=WC)).status_code == 201
    scaled = await api.post("/system/scale-function/wc", json={"replicas": 3})
    assert scaled.status_code == 202
    assert scaled.json()["replicas"] == 3 and scaled.json()["pool"]["min"] == 3

    async def three_warm() -> bool:
        worker = manager.workers.get("wc")
        return worker is not None and worker.spec.pool_min == 3 and len(worker.pool.ready) == 3

    await eventually(three_warm)
    bad = await api.post("/system/scale-function/wc", json={"replicas": -1})
    assert bad.status_code == 400
    unknown = await api.post("/system/scale-function/nope", json={"replicas": 1})
    assert unknown.status_code == 404
