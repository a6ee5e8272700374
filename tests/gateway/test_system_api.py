"""System routes: health, info, version, metrics, the OpenAPI document."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis
from starlette.routing import Route

from gateway import __version__, calls, environments, functions, system
from pool.contract.config import HostConfig
from pool.manager import PoolManager
from tests.gateway.conftest import serve


async def test_info_lists_the_node_and_its_pools(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    spec = {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio"}
    assert (await api.post("/system/functions", json=spec)).status_code == 201
    info = (await api.get("/system/info")).json()
    assert info["version"]["release"] == __version__
    assert info["provider"]["provider"] == "scow" and info["functions"] == 1
    assert info["limits"] == {"body_bytes": 6 << 20, "queue": 1024}
    (node,) = info["nodes"]
    assert node["id"] == manager.node_id and node["live"] and node["heartbeat_age"] < 5
    assert (await api.get("/system/version")).json() == {"version": __version__}


async def test_healthz_is_503_while_redis_is_away(settings: HostConfig, run_dir) -> None:  # type: ignore[no-untyped-def]
    away = HostConfig(redis_url="unix:///nonexistent/redis.sock")
    async with serve(away, run_dir) as gw, gw.tcp() as api:
        health = await api.get("/healthz")
        assert health.status_code == 503 and health.json()["error"] == "redis_unavailable"
        listing = await api.get("/system/functions")
        assert listing.status_code == 503 and listing.json()["error"] == "redis_unavailable"
        call = await api.post("/function/any")
        assert call.status_code == 503


async def test_metrics_are_prometheus_text(api: httpx.AsyncClient) -> None:
    response = await api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE scow_call_seconds histogram" in response.text
    assert "# TYPE gateway_functions_seconds histogram" in response.text


async def test_openapi_describes_every_native_route(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    described = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    for module in (system, functions, calls, environments):
        for route in module.routes:
            assert isinstance(route, Route)
            if "{path:path}" in route.path:
                continue  # the same call route, with a path after the name
            for method in route.methods or ():
                if method in ("HEAD", "OPTIONS"):  # HEAD comes with GET; OPTIONS is CORS's
                    continue
                assert (route.path, method) in described, (route.path, method)


async def test_version_prefix_is_accepted(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1.41/system/version")).json() == {"version": __version__}


async def test_unknown_redis_key_space_is_untouched(api: httpx.AsyncClient, redis_url: str) -> None:
    """The gateway writes nothing on read-only routes: no stray keys from listing."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        before = set(await client.keys("*"))
        await api.get("/system/functions")
        await api.get("/system/environments")
        await api.get("/system/info")
        after = set(await client.keys("*"))
    finally:
        await client.aclose()
    assert {k for k in after - before if not k.endswith(b"}:replies")} == set()
